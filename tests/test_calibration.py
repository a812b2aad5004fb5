"""Calibration: its conversions, its files, and `rig calibrate` on the twin through the real bus."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hardware.clock import WallClock
from hardware.devices import Devices, open_devices
from hardware.dynamixel.bus import DynamixelBus
from hardware.profile import Profile, RobotSpec, load_profile
from rig.calibrate import (
    SWEEP_MARGIN_RAD,
    CalibrationError,
    Pose,
    TerminalHands,
    TwinHands,
    calibrate_arm,
    cli_calibrate,
    run_calibration,
)
from rig.calibration import (
    RAD_PER_TICK,
    ArmCalibration,
    CalibrationStore,
    JointCalibration,
    default_calibration,
)

DEFAULT_LIMITS = RobotSpec().joint_ranges  # the profile's joint ranges (ALOHA's)

TICK = RAD_PER_TICK


@pytest.fixture(scope="module")
def profile() -> Profile:
    return dataclasses.replace(load_profile("aloha-sim"), cameras={})


@pytest.fixture
def devices(profile: Profile) -> Iterator[Devices]:
    with open_devices(profile) as devices:
        yield devices


def open_bus(devices: Devices, arm: str) -> DynamixelBus:
    return DynamixelBus(devices.ports[arm], devices.profile.arms[arm].baudrate).open()


def twin_hands(devices: Devices) -> TwinHands:
    """A quicker sweep than `rig calibrate`'s (1 s, 7 poses a joint): the same ranges, fewer reads."""
    assert devices.twin is not None
    return TwinHands(devices.twin, sweep_s=1.0)


# ---- conversions --------------------------------------------------------------------------------
def test_ticks_to_positions_and_back_with_an_offset_and_a_reversed_joint(profile: Profile) -> None:
    base = default_calibration("leader_left", profile.arms["leader_left"])
    joints = dict(base.joints)
    joints["shoulder"] = JointCalibration(offset=-300, sign=1)
    joints["elbow"] = JointCalibration(offset=123, sign=-1)
    calibration = dataclasses.replace(base, joints=joints)
    ticks = np.array([2048, 2348, 1000, 3000, 2100, 1900, 1200])

    positions = calibration.positions(ticks)

    assert positions[1] == pytest.approx(0.0)  # 2348 - 300 is the centre tick
    assert positions[2] == pytest.approx(-(1000 + 123 - 2048) * TICK)
    np.testing.assert_array_equal(calibration.goal_ticks(positions), ticks)


def test_gripper_map_takes_leader_closed_and_open_to_the_followers(profile: Profile) -> None:
    leader = default_calibration("leader_left", profile.arms["leader_left"])
    follower = default_calibration("follower_left", profile.arms["follower_left"])

    for leader_angle, opening, follower_angle in [
        (leader.gripper_closed, 0.0, follower.gripper_closed),
        (leader.gripper_open, 1.0, follower.gripper_open),
    ]:
        leader_ticks = np.full(7, 2048)
        leader_ticks[6] = round(leader_angle / TICK) + 2048
        positions = leader.positions(leader_ticks)
        assert positions[6] == pytest.approx(opening, abs=1e-3)
        follower_ticks = follower.goal_ticks(positions)
        assert follower.angles(follower_ticks)[6] == pytest.approx(follower_angle, abs=3 * TICK)


# ---- files --------------------------------------------------------------------------------------
def test_store_saves_and_loads_a_calibration(tmp_path: Path, profile: Profile) -> None:
    spec = profile.arms["follower_right"]
    base = default_calibration("follower_right", spec)
    calibration = dataclasses.replace(
        base,
        joints={**base.joints, "waist": JointCalibration(offset=17, sign=-1, lower=-1.0, upper=2.0)},
        gripper_closed=-0.5,
    )
    store = CalibrationStore(tmp_path)

    path = store.save("aloha-sim", calibration)

    assert path == tmp_path / "aloha-sim" / "follower_right.json"
    assert store.load("aloha-sim", "follower_right", spec) == calibration


def test_store_without_a_file_gives_the_profile_default(tmp_path: Path, profile: Profile) -> None:
    spec = profile.arms["leader_right"]
    assert CalibrationStore(tmp_path).load("aloha-sim", "leader_right", spec) == default_calibration(
        "leader_right", spec
    )


def test_store_names_a_corrupt_file_and_the_fix(tmp_path: Path, profile: Profile) -> None:
    store = CalibrationStore(tmp_path)
    path = store.path("aloha-sim", "leader_left")
    path.parent.mkdir(parents=True)
    path.write_text('{"arm": "leader_left", "joints": ')

    with pytest.raises(ValueError, match=r"leader_left\.json is unreadable.*rig calibrate --arm leader_left"):
        store.load("aloha-sim", "leader_left", profile.arms["leader_left"])


# ---- the procedure on the twin ------------------------------------------------------------------
def assert_covers_the_sweep(calibration: ArmCalibration) -> None:
    for joint, c in calibration.joints.items():
        if joint == "gripper":
            assert (c.lower, c.upper) == (0.0, 1.0)
            continue
        lower, upper = DEFAULT_LIMITS[joint]
        assert c.lower == pytest.approx(lower + SWEEP_MARGIN_RAD, abs=2 * TICK), joint
        assert c.upper == pytest.approx(upper - SWEEP_MARGIN_RAD, abs=2 * TICK), joint


@pytest.mark.parametrize("arm", ["leader_left", "follower_right"])
def test_calibrate_arm_on_the_twin_finds_zero_offsets_and_the_swept_ranges(
    devices: Devices, arm: str
) -> None:
    spec = devices.profile.arms[arm]
    bus = open_bus(devices, arm)
    try:
        calibration = calibrate_arm(arm, spec, bus, twin_hands(devices))
    finally:
        bus.close()

    assert [c.offset for c in calibration.joints.values()] == [0] * 7  # the twin's servos are zeroed
    assert_covers_the_sweep(calibration)
    assert calibration.gripper_closed == pytest.approx(spec.gripper.closed, abs=2 * TICK)
    assert calibration.gripper_open == pytest.approx(spec.gripper.open, abs=2 * TICK)


def test_calibration_compensates_a_homing_offset_in_a_servo(devices: Devices) -> None:
    spec = devices.profile.arms["follower_left"]
    elbow, wrist = spec.joints["elbow"].id, spec.joints["wrist_angle"].id
    bus = open_bus(devices, "follower_left")
    try:
        bus.set_torque([elbow, wrist], False)  # homing offset is EEPROM: writable only with torque off
        bus.write(elbow, "homing_offset", 300)
        bus.write(wrist, "homing_offset", -200)
        calibration = calibrate_arm("follower_left", spec, bus, twin_hands(devices))
        zero_ticks = bus.sync_read_state(spec.ids).position  # the operator holds the last sweep pose
    finally:
        bus.close()

    assert calibration.joints["elbow"].offset == -300
    assert calibration.joints["wrist_angle"].offset == 200
    assert calibration.joints["waist"].offset == 0
    assert_covers_the_sweep(calibration)
    assert calibration.positions(zero_ticks)[:6] == pytest.approx(np.zeros(6), abs=TICK)


class StuckJoint:
    """The twin's operator, except that one leader joint never leaves zero."""

    def __init__(self, devices: Devices, arm: str, joint: int) -> None:
        assert devices.twin is not None
        self._twin, self._arm, self._joint = devices.twin, arm, joint
        self._hands = twin_hands(devices)

    def ask(self, arm: str, instruction: str, pose: Pose) -> None:
        self._hands.ask(arm, instruction, pose)
        self._pin()

    def moving(self) -> bool:
        return self._hands.moving()

    def wait(self) -> None:
        self._hands.wait()
        self._pin()

    def _pin(self) -> None:
        pose = self._twin.leader_pose(self._arm)
        pose[self._joint] = 0.0
        self._twin.set_leader_pose(self._arm, list(pose))


def test_a_sweep_that_leaves_a_joint_still_is_refused_naming_the_joint(devices: Devices) -> None:
    spec = devices.profile.arms["leader_right"]
    bus = open_bus(devices, "leader_right")
    try:
        with pytest.raises(CalibrationError, match=r"leader_right: the sweep hardly moved wrist_rotate"):
            calibrate_arm("leader_right", spec, bus, StuckJoint(devices, "leader_right", 5))
    finally:
        bus.close()


# ---- every arm ----------------------------------------------------------------------------------
def test_run_calibration_skips_a_calibrated_arm_unless_redo(tmp_path: Path, devices: Devices) -> None:
    profile = devices.profile
    store = CalibrationStore(tmp_path)
    marked = dataclasses.replace(
        default_calibration("leader_left", profile.arms["leader_left"]), gripper_closed=-3.0
    )
    path = store.save(profile.name, marked)
    lines: list[str] = []

    skipped = run_calibration(
        profile, devices, store, ["leader_left"], False, twin_hands(devices), lines.append
    )

    assert skipped == {}
    assert "leader_left: already calibrated" in lines[0]
    assert store.load(profile.name, "leader_left", profile.arms["leader_left"]) == marked

    redone = run_calibration(
        profile, devices, store, ["leader_left"], True, twin_hands(devices), lines.append
    )

    assert redone == {"leader_left": path}
    fresh = store.load(profile.name, "leader_left", profile.arms["leader_left"])
    assert fresh.gripper_closed == pytest.approx(profile.arms["leader_left"].gripper.closed, abs=2 * TICK)


def test_run_calibration_refuses_an_arm_the_profile_lacks(tmp_path: Path, devices: Devices) -> None:
    with pytest.raises(ValueError, match=r"no arm 'puppet_left'; its arms: leader_left"):
        run_calibration(
            devices.profile, devices, CalibrationStore(tmp_path), ["puppet_left"], False, twin_hands(devices)
        )


# ---- a person at the terminal -------------------------------------------------------------------
def test_terminal_hands_are_moving_until_enter() -> None:
    read_end, write_end = os.pipe()
    lines: list[str] = []
    with os.fdopen(read_end) as stdin, os.fdopen(write_end, "w") as typed:
        hands = TerminalHands(WallClock(), lines.append, stdin)
        hands.ask("leader_left", "hold still.", "zero")
        for _ in range(3):
            assert hands.moving()
            hands.wait()
        typed.write("\n")
        typed.flush()
        waits = 0
        while hands.moving() and waits < 100:  # 2 s at most
            hands.wait()
            waits += 1

    assert lines == ["hold still. Press Enter when done."]
    assert not hands.moving()


def test_terminal_hands_refuse_a_closed_input() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with os.fdopen(read_end) as stdin:
        hands = TerminalHands(WallClock(), lambda _: None, stdin)
        hands.ask("leader_left", "sweep.", "sweep")
        with pytest.raises(CalibrationError, match="needs a person"):
            for _ in range(100):
                hands.moving()
                hands.wait()


# ---- `rig calibrate` ----------------------------------------------------------------------------
def test_cli_calibrate_on_the_twin_writes_every_arm(tmp_path: Path) -> None:
    assert cli_calibrate("aloha-sim", None, False, tmp_path) == 0
    assert sorted(p.name for p in (tmp_path / "aloha-sim").iterdir()) == [
        "follower_left.json",
        "follower_right.json",
        "leader_left.json",
        "leader_right.json",
    ]


def test_cli_calibrate_names_an_unknown_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_calibrate("aloha-sim", ["leader_middle"], False, tmp_path) == 2
    error = capsys.readouterr().err
    assert error.startswith("rig calibrate: profile 'aloha-sim' has no arm 'leader_middle'")
    assert error.count("\n") == 1


def test_cli_calibrate_reports_a_missing_bus_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_calibrate("aloha", ["leader_left"], False, tmp_path) == 1
    error = capsys.readouterr().err
    assert error.startswith("rig calibrate: serial port /dev/ttyDXL_leader_left does not exist")
    assert error.count("\n") == 1
