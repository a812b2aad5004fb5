"""The `rig` command as a user runs it: version, doctor on both profiles, and `rig sim` serving a
client written with plain dynamixel-sdk and nothing of this project."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler, PortHandler

from rig import __version__

RIG = [sys.executable, "-m", "rig.cli"]
HEADER = b"\xff\xff\xfd\x00"  # Protocol 2.0


def run_rig(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RIG, *args], capture_output=True, text=True, timeout=timeout)


def test_version() -> None:
    result = run_rig("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rig {__version__}"


def test_doctor_on_the_twin_is_all_green() -> None:
    result = run_rig("doctor", "--profile", "aloha-sim")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    for name in ("leader_left", "follower_right", "shoulder (shadow) id 3", "cam_high", "cam_right_wrist"):
        assert name in result.stdout
    assert "all devices present" in result.stdout


def test_doctor_on_real_hardware_here_says_what_is_missing() -> None:
    result = run_rig("doctor", "--profile", "aloha")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "/dev/ttyDXL_follower_left does not exist" in result.stdout
    assert "rs-enumerate-devices" in result.stdout
    assert "problem(s)" in result.stdout


def test_an_unknown_profile_is_a_clear_error() -> None:
    result = run_rig("doctor", "--profile", "nope")
    assert result.returncode == 2
    assert "no profile named 'nope'" in result.stderr


@pytest.fixture
def rig_sim() -> Iterator[dict[str, str]]:
    """`rig sim` in a subprocess; yields what it printed before `ready` as {key: value}."""
    process = subprocess.Popen(
        [*RIG, "sim", "--profile", "aloha-sim", "--seed", "1", "--duration", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: dict[str, str] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                break
            key, _, value = line.strip().rpartition(" ")
            printed[key] = value
        else:
            pytest.fail(f"rig sim ended before ready: {process.stderr.read() if process.stderr else ''}")
        yield printed
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0


def test_rig_sim_prints_ports_and_camera_serials(rig_sim: dict[str, str]) -> None:
    for arm in ("leader_left", "leader_right", "follower_left", "follower_right"):
        assert rig_sim[arm].startswith("/dev/pts/")
    assert rig_sim["camera cam_high"] == "900000000001"
    assert rig_sim["task"] == "transfer_cube"


def test_a_plain_sdk_client_drives_a_follower_joint(rig_sim: dict[str, str]) -> None:
    port = PortHandler(rig_sim["follower_left"])
    assert port.openPort() and port.setBaudRate(1_000_000)
    packets = PacketHandler(2.0)
    try:
        for servo_id in range(1, 10):
            _, result, error = packets.ping(port, servo_id)
            assert (result, error) == (COMM_SUCCESS, 0), servo_id
        reader = GroupSyncRead(port, packets, 132, 4)
        for servo_id in (1, 2, 4, 6, 7, 8, 9):
            reader.addParam(servo_id)
        assert reader.txRxPacket() == COMM_SUCCESS
        elbow = reader.getData(4, 132, 4)
        assert packets.write1ByteTxRx(port, 4, 64, 1)[:2] == (COMM_SUCCESS, 0)
        goal = elbow - 150
        writer = GroupSyncWrite(port, packets, 116, 4)
        writer.addParam(4, goal.to_bytes(4, "little"))
        assert writer.txPacket() == COMM_SUCCESS
        deadline = time.monotonic() + 60
        positions = []
        while time.monotonic() < deadline:
            assert reader.txRxPacket() == COMM_SUCCESS
            positions.append(reader.getData(4, 132, 4))
            if abs(positions[-1] - goal) <= 5:
                break
            time.sleep(0.05)
        assert abs(positions[-1] - goal) <= 5, positions[-10:]
        assert len(set(positions)) > 1  # watched it move, not jump
    finally:
        port.closePort()


def test_hostile_bytes_on_a_port_do_not_silence_rig_sim(rig_sim: dict[str, str]) -> None:
    """The attacks that once killed or stalled a chain: a run of false headers (recursion), and a
    header promising 1000 bytes that never come (a stall until they did)."""
    port = PortHandler(rig_sim["follower_left"])
    assert port.openPort() and port.setBaudRate(1_000_000)
    packets = PacketHandler(2.0)
    try:
        port.writePort(list(HEADER * 1100))
        port.writePort(list(HEADER + bytes([1]) + (1000).to_bytes(2, "little") + bytes([3, 64, 0])))
        time.sleep(0.1)
        for servo_id in range(1, 10):
            _, result, error = packets.ping(port, servo_id)
            assert (result, error) == (COMM_SUCCESS, 0), servo_id
    finally:
        port.closePort()
