"""The twin as a driver sees it: plain dynamixel-sdk on its ports, librealsense on its cameras."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from dynamixel_sdk import (
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
)

from hardware.devices import open_devices
from hardware.profile import Profile, load_profile
from hardware.realsense import CameraSpec, RealSenseCamera
from hardware.sim.twin import Twin

PRESENT_POSITION, GOAL_POSITION, TORQUE_ENABLE = 132, 116, 64


def without_cameras(profile: Profile) -> Profile:
    return dataclasses.replace(profile, cameras={})


@pytest.fixture
def twin() -> Iterator[Twin]:
    with Twin(without_cameras(load_profile("aloha-sim")), lockstep=True, seed=0) as twin:
        yield twin


@pytest.fixture
def sdk_port(twin: Twin) -> Iterator[tuple[PortHandler, PacketHandler]]:
    port = PortHandler(twin.ports["follower_left"])
    assert port.openPort() and port.setBaudRate(1_000_000)
    yield port, PacketHandler(2.0)
    port.closePort()


ANSWER_WITHIN_S = 30.0  # wall time; a reply the SDK gave up on (a busy machine) is asked for again


def answered(ask: Callable[[], int]) -> None:
    """Wait for the state "the servo answered", not for a time: dynamixel-sdk gives up on a reply after
    a few wall-clock milliseconds, which a busy machine's twin can miss; asking again is what a
    driver does."""
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while (result := ask()) != COMM_SUCCESS:
        assert result == COMM_RX_TIMEOUT and time.monotonic() < deadline, f"no answer: result {result}"


def ping(port: PortHandler, packets: PacketHandler, servo_id: int) -> tuple[int, int]:
    """(model number, error) of the servo's answer to a ping."""
    reply = (0, 0, 0)

    def ask() -> int:
        nonlocal reply
        reply = packets.ping(port, servo_id)
        return reply[1]

    answered(ask)
    return reply[0], reply[2]


def sync_read_positions(port: PortHandler, packets: PacketHandler, ids: list[int]) -> list[int]:
    group = GroupSyncRead(port, packets, PRESENT_POSITION, 4)
    for servo_id in ids:
        group.addParam(servo_id)
    answered(group.txRxPacket)
    return [np.int32(group.getData(i, PRESENT_POSITION, 4)).item() for i in ids]


def test_every_follower_servo_and_shadow_answers_a_ping(
    twin: Twin, sdk_port: tuple[PortHandler, PacketHandler]
) -> None:
    port, packets = sdk_port
    models = {i: ping(port, packets, i) for i in range(1, 10)}
    assert all(error == 0 for _, error in models.values())
    assert {i: number for i, (number, _) in models.items()} == {
        1: 1120,
        2: 1120,
        3: 1120,
        4: 1120,
        5: 1120,
        6: 1120,
        7: 1120,
        8: 1020,
        9: 1020,
    }


def test_shadow_motor_reads_like_its_primary(twin: Twin, sdk_port: tuple[PortHandler, PacketHandler]) -> None:
    port, packets = sdk_port
    shoulder, shadow, elbow, elbow_shadow = sync_read_positions(port, packets, [2, 3, 4, 5])
    assert shoulder == shadow and elbow == elbow_shadow
    assert packets.read1ByteTxRx(port, 3, 12)[0] == 2  # Secondary ID: follows id 2


def test_torque_on_and_a_goal_move_the_simulated_joint(
    twin: Twin, sdk_port: tuple[PortHandler, PacketHandler]
) -> None:
    port, packets = sdk_port
    (start,) = sync_read_positions(port, packets, [1])
    assert packets.write1ByteTxRx(port, 1, TORQUE_ENABLE, 1)[:2] == (COMM_SUCCESS, 0)
    goal = start + 300  # ~26 degrees of waist
    writer = GroupSyncWrite(port, packets, GOAL_POSITION, 4)
    writer.addParam(1, goal.to_bytes(4, "little"))
    assert writer.txPacket() == COMM_SUCCESS
    twin.clock.sleep_until(twin.clock.now() + 1.0)
    (reached,) = sync_read_positions(port, packets, [1])
    assert abs(reached - goal) <= 5
    assert twin.world.joint_state("left").position[0] == pytest.approx(
        (goal - 2048) * 2 * np.pi / 4096, abs=0.01
    )


def test_gripper_servo_angle_maps_onto_the_finger_opening(twin: Twin) -> None:
    port = PortHandler(twin.ports["follower_right"])
    assert port.openPort()
    packets = PacketHandler(2.0)
    try:
        gripper = twin.profile.arms["follower_right"].gripper
        closed_ticks = round(gripper.closed * 4096 / (2 * np.pi)) + 2048
        packets.write1ByteTxRx(port, 9, TORQUE_ENABLE, 1)
        packets.write4ByteTxRx(port, 9, GOAL_POSITION, closed_ticks)
        twin.clock.sleep_until(twin.clock.now() + 1.0)
        closed_m, _ = twin.world.gripper_range()
        assert twin.world.joint_state("right").position[6] == pytest.approx(closed_m, abs=0.003)
    finally:
        port.closePort()


def test_leader_positions_come_from_whoever_moves_the_leader(twin: Twin) -> None:
    pose = np.array([0.3, -0.5, 0.6, 0.1, -0.2, 0.4, -1.2])
    twin.set_leader_pose("leader_right", pose)
    port = PortHandler(twin.ports["leader_right"])
    assert port.openPort()
    try:
        positions = sync_read_positions(port, PacketHandler(2.0), [1, 2, 4, 6, 7, 8, 9])
        expected = [round(v * 4096 / (2 * np.pi)) + 2048 for v in pose]
        assert positions == expected
    finally:
        port.closePort()


def test_a_bad_packet_gets_no_normal_reply(twin: Twin, sdk_port: tuple[PortHandler, PacketHandler]) -> None:
    port, packets = sdk_port
    ping = bytearray(b"\xff\xff\xfd\x00\x01\x03\x00\x01\x19\x4e")
    ping[-1] ^= 0x55  # break the CRC
    port.clearPort()
    port.writePort(bytes(ping))
    port.setPacketTimeoutMillis(50)
    reply, result = packets.rxPacket(port, False)
    assert result != COMM_SUCCESS or reply[8] & 0x7F == 3  # silence, or a CRC-error status


def test_lockstep_clock_only_moves_when_waited_on(twin: Twin) -> None:
    assert twin.clock.now() == 0.0
    twin.clock.sleep_until(0.25)
    assert twin.clock.now() == pytest.approx(0.25, abs=0.002)
    twin.clock.sleep_until(0.1)  # the past: nothing happens
    assert twin.clock.now() == pytest.approx(0.25, abs=0.002)


def test_cameras_deliver_the_rendered_images_through_librealsense() -> None:
    profile = load_profile("aloha-sim")
    profile = dataclasses.replace(profile, cameras={"cam_high": profile.cameras["cam_high"]})
    settings = profile.cameras["cam_high"]
    with open_devices(profile) as devices:
        assert devices.twin is not None
        spec = CameraSpec("cam_high", settings.serial, settings.width, settings.height, settings.fps)
        with RealSenseCamera(spec, devices.cameras) as camera:
            camera.start()
            frames = []
            for _ in range(3):
                devices.clock.sleep_until(devices.clock.now() + 1 / settings.fps)
                frames.append(camera.wait_for_frame(after=frames[-1].frame_number if frames else -1))
            numbers = [f.frame_number for f in frames]
            assert numbers == sorted(set(numbers))
            assert [f.timestamp_ms for f in frames] == pytest.approx(
                [n * 1000 / settings.fps for n in numbers]
            )
            latest = frames[-1]
            while latest.timestamp_ms < devices.clock.now() * 1000 - 1e-6:  # the frame of the present state
                latest = camera.wait_for_frame(after=latest.frame_number)
            rendered = devices.twin.world.render("top", settings.height, settings.width)
            assert latest.color.shape == (settings.height, settings.width, 3)
            assert np.array_equal(latest.color, rendered)


def test_a_real_profile_cannot_start_a_twin() -> None:
    with pytest.raises(ValueError, match="real hardware"):
        Twin(load_profile("aloha"))


def test_a_ping_the_sdk_gave_up_on_is_asked_again(
    twin: Twin, sdk_port: tuple[PortHandler, PacketHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, packets = sdk_port
    real, calls = packets.ping, []

    def busy_machine(port_: PortHandler, servo_id: int) -> tuple[int, int, int]:
        calls.append(servo_id)
        return (0, COMM_RX_TIMEOUT, 0) if len(calls) < 3 else real(port_, servo_id)

    monkeypatch.setattr(packets, "ping", busy_machine)
    assert ping(port, packets, 1) == (1120, 0) and len(calls) == 3
