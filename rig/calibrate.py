"""`rig calibrate`: find each arm's homing offsets, joint ranges and gripper angles by moving it.

The procedure is the same whoever moves the arm (a `Hands`): torque off; the arm is held in its zero
pose and the seven primary servos are read, which gives the offsets that make that pose read the
centre tick; then every joint is swept through its range while the servos are sampled, which gives
the joint ranges and the gripper's closed and open angles. On hardware a person moves the arm and
presses Enter; on the twin a scripted operator places it, so the same code is tested end to end.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

import numpy as np

from hardware.clock import Clock
from hardware.devices import Devices, open_devices
from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.control_table import CENTER_TICK
from hardware.dynamixel.errors import DynamixelError
from hardware.profile import ArmSpec, Profile, load_profile
from rig.calibration import (
    ArmCalibration,
    CalibrationStore,
    JointCalibration,
    default_calibration,
    default_calibration_dir,
)
from rig.step import GRIPPER

if TYPE_CHECKING:
    from hardware.sim.twin import Twin

Pose = Literal["zero", "sweep"]
Out = Callable[[str], None]

WAIT_S = 0.02  # sampling period of the sweep (50 Hz, the loop's rate)
MIN_TRAVEL_RAD = 0.2  # a joint that moved less during the sweep was not swept
SWEEP_S = 4.0  # how long the twin's operator takes to sweep an arm (simulated time)
SWEEP_MARGIN_RAD = 0.1  # the twin's operator stops this short of each joint limit

ZERO_INSTRUCTION = (
    "{arm}: torque is off now, so support the arm. Hold it in its zero pose (upper arm vertical, "
    "forearm level and pointing forward, wrist straight, nothing rolled) and keep it still."
)
SWEEP_INSTRUCTION = (
    "{arm}: move every joint slowly through its full range, one at a time, "
    "then close the gripper fully and open it fully."
)


class CalibrationError(ValueError):
    """A calibration that cannot be trusted; the message says what to do differently."""


class Hands(Protocol):
    """Who moves the arm during calibration: a person at the terminal, or the twin's scripted operator."""

    def ask(self, arm: str, instruction: str, pose: Pose) -> None:
        """A person: print the instruction; the twin: start that motion."""
        ...

    def moving(self) -> bool:
        """A person: True until they press Enter; the twin: until its motion is done."""
        ...

    def wait(self) -> None:
        """Let about one sampling period pass on the rig's clock."""
        ...


# ---- the procedure ------------------------------------------------------------------------------
def calibrate_arm(name: str, spec: ArmSpec, bus: DynamixelBus, hands: Hands) -> ArmCalibration:
    """Zero pose -> offsets, sweep -> ranges and gripper angles. Torque stays off afterwards."""
    bus.set_torque(_all_ids(spec), False)
    hands.ask(name, ZERO_INSTRUCTION.format(arm=name), "zero")
    while hands.moving():
        hands.wait()
    offsets = CENTER_TICK - _read_ticks(bus, spec.ids)
    offsets[GRIPPER] = 0  # the gripper's angles are found by the sweep, not by a zero pose
    zeroed = _with_offsets(default_calibration(name, spec), offsets)
    hands.ask(name, SWEEP_INSTRUCTION.format(arm=name), "sweep")
    angles = np.array([zeroed.angles(ticks) for ticks in _sweep_ticks(bus, spec.ids, hands)])
    return _with_ranges(zeroed, spec, angles.min(axis=0), angles.max(axis=0))


def _all_ids(spec: ArmSpec) -> list[int]:
    """Primary and shadow ids: torque off must free both motors of a doubled joint."""
    shadows = [joint.shadow for joint in spec.joints.values() if joint.shadow is not None]
    return [*spec.ids, *shadows]


def _read_ticks(bus: DynamixelBus, ids: Sequence[int]) -> np.ndarray:
    return bus.sync_read_state(ids).position.astype(np.int64)


def _sweep_ticks(bus: DynamixelBus, ids: Sequence[int], hands: Hands) -> list[np.ndarray]:
    """One reading per wait() while the arm moves, the first before it starts."""
    samples = [_read_ticks(bus, ids)]
    while hands.moving():
        hands.wait()
        samples.append(_read_ticks(bus, ids))
    return samples


def _with_offsets(calibration: ArmCalibration, offsets: np.ndarray) -> ArmCalibration:
    joints = {
        joint: replace(c, offset=int(offset))
        for (joint, c), offset in zip(calibration.joints.items(), offsets, strict=True)
    }
    return replace(calibration, joints=joints)


def _with_ranges(
    calibration: ArmCalibration, spec: ArmSpec, lowest: np.ndarray, highest: np.ndarray
) -> ArmCalibration:
    """The observed extremes become the ranges; the gripper's become its closed and open angles."""
    still = [
        f"{joint} ({span:.2f} rad)"
        for joint, span in zip(calibration.joints, highest - lowest, strict=True)
        if span < MIN_TRAVEL_RAD
    ]
    if still:
        raise CalibrationError(
            f"{calibration.arm}: the sweep hardly moved {', '.join(still)}; move every joint through "
            f"its full range (at least {MIN_TRAVEL_RAD} rad) and calibrate again"
        )
    joints = {
        joint: JointCalibration(offset=c.offset, sign=c.sign, lower=float(lo), upper=float(hi))
        for (joint, c), lo, hi in zip(calibration.joints.items(), lowest, highest, strict=True)
    }
    joints["gripper"] = JointCalibration(sign=joints["gripper"].sign, lower=0.0, upper=1.0)
    closed, opened = float(lowest[GRIPPER]), float(highest[GRIPPER])
    if spec.gripper.closed > spec.gripper.open:  # this gripper closes towards higher angles
        closed, opened = opened, closed
    return replace(calibration, joints=joints, gripper_closed=closed, gripper_open=opened)


# ---- every arm of a rig -------------------------------------------------------------------------
def select_arms(profile: Profile, arms: Sequence[str] | None) -> list[str]:
    """The arms named (all of the profile's when none are), refusing names the profile lacks."""
    if not arms:
        return list(profile.arms)
    unknown = [arm for arm in arms if arm not in profile.arms]
    if unknown:
        raise ValueError(
            f"profile {profile.name!r} has no arm {', '.join(map(repr, unknown))}; "
            f"its arms: {', '.join(profile.arms)}"
        )
    return list(arms)


def run_calibration(
    profile: Profile,
    devices: Devices,
    store: CalibrationStore,
    arms: Sequence[str] | None,
    redo: bool,
    hands: Hands,
    out: Out = print,
) -> dict[str, Path]:
    """Calibrate and save each arm (or those named) that has no stored calibration, or all with `redo`.

    Returns the files written, by arm.
    """
    written: dict[str, Path] = {}
    for name in select_arms(profile, arms):
        path = store.path(profile.name, name)
        if path.exists() and not redo:
            out(f"{name}: already calibrated ({path}); --redo calibrates it again")
            continue
        spec = profile.arms[name]
        motors = {joint.id: joint.motor for joint in spec.joints.values()}
        with DynamixelBus(
            devices.ports[name], spec.baudrate, motors=motors, reply_clock=devices.reply_clocks.get(name)
        ) as bus:
            calibration = calibrate_arm(name, spec, bus, hands)
        written[name] = store.save(profile.name, calibration)
        out(f"{name}: {describe(calibration)} -> {written[name]}")
    return written


def describe(calibration: ArmCalibration) -> str:
    """One line: the offsets (ticks) and the gripper's angles."""
    offsets = ", ".join(
        f"{joint} {c.offset:+d}" for joint, c in calibration.joints.items() if joint != "gripper"
    )
    return (
        f"offsets {offsets}; gripper closed {calibration.gripper_closed:+.3f} "
        f"open {calibration.gripper_open:+.3f} rad"
    )


def cli_calibrate(
    profile_name: str, arms: Sequence[str] | None, redo: bool, calibration_dir: Path | None
) -> int:
    """`rig calibrate`: 0 when done, 1 when a bus or the sweep failed, 2 for an unknown profile or arm."""
    try:
        profile = load_profile(profile_name)
        names = select_arms(profile, arms)
    except ValueError as exc:  # ProfileError is one too
        return _fail(exc, 2)
    store = CalibrationStore(calibration_dir or default_calibration_dir())
    with open_devices(profile) as devices:
        hands: Hands = TwinHands(devices.twin) if devices.twin else TerminalHands(devices.clock)
        try:
            run_calibration(profile, devices, store, names, redo, hands)
        except (DynamixelError, CalibrationError) as exc:
            return _fail(exc, 1)
    return 0


def _fail(exc: Exception, code: int) -> int:
    print(f"rig calibrate: {exc}", file=sys.stderr)
    return code


# ---- who moves the arm --------------------------------------------------------------------------
class TerminalHands:
    """A person at the terminal: reads the instruction, moves the arm, presses Enter.

    Enter is read by a thread, so the sweep keeps sampling while the person moves the arm.
    """

    def __init__(self, clock: Clock, out: Out = print, stdin: TextIO | None = None) -> None:
        self._clock, self._out = clock, out
        self._stdin = stdin if stdin is not None else sys.stdin
        self._entered = threading.Event()
        self._closed = False

    def ask(self, arm: str, instruction: str, pose: Pose) -> None:
        self._out(f"{instruction} Press Enter when done.")
        self._entered.clear()
        threading.Thread(target=self._read_enter, name="calibrate-enter", daemon=True).start()

    def _read_enter(self) -> None:
        self._closed = self._stdin.readline() == ""
        self._entered.set()

    def moving(self) -> bool:
        if self._entered.is_set() and self._closed:
            raise CalibrationError("the terminal's input closed: calibration needs a person to press Enter")
        return not self._entered.is_set()

    def wait(self) -> None:
        self._clock.sleep_until(self._clock.now() + WAIT_S)


class TwinHands:
    """The twin's operator: places the arm (a leader's servos, a follower's simulated joints) in one
    pose per wait(), as a hand would move it.

    Poses are six joint angles and the gripper in the arm's own unit: a leader's gripper motor angle,
    a follower's finger opening (m).
    """

    def __init__(self, twin: Twin, sweep_s: float = SWEEP_S) -> None:
        from hardware.sim.world import ARM_JOINTS  # MuJoCo is loaded already when there is a twin

        self._twin, self._sweep_s = twin, sweep_s
        self._world_order = ARM_JOINTS
        self._arm = ""
        self._poses = np.zeros((1, len(ARM_JOINTS)))
        self._index = 0

    def ask(self, arm: str, instruction: str, pose: Pose) -> None:
        spec = self._twin.profile.arms[arm]
        gripper = self._gripper_travel(spec)
        self._arm, self._index = arm, 0
        self._poses = (
            zero_pose(gripper)[None]
            if pose == "zero"
            else sweep_poses(spec, gripper, self._twin.profile.robot.joint_ranges, self._sweep_s)
        )
        self._place()

    def moving(self) -> bool:
        return self._index < len(self._poses) - 1

    def wait(self) -> None:
        """Time passes, then the hand puts the arm at its next pose (or holds it at the last)."""
        clock = self._twin.clock
        clock.sleep_until(clock.now() + WAIT_S)
        self._index = min(self._index + 1, len(self._poses) - 1)
        self._place()

    def _gripper_travel(self, spec: ArmSpec) -> tuple[float, float]:
        if spec.role == "leader":
            return spec.gripper.closed, spec.gripper.open
        return self._twin.world.gripper_range()

    def _place(self) -> None:
        spec = self._twin.profile.arms[self._arm]
        pose = self._poses[self._index]
        if spec.role == "leader":
            self._twin.set_leader_pose(self._arm, list(pose))
            return
        in_world_order = np.empty(len(self._world_order))
        in_world_order[[self._world_order.index(joint) for joint in spec.joints]] = pose
        self._twin.world.place_arm(spec.side, in_world_order)


def zero_pose(gripper: tuple[float, float]) -> np.ndarray:
    """Every joint at zero, the gripper half open."""
    pose = np.zeros(GRIPPER + 1)
    pose[GRIPPER] = sum(gripper) / 2
    return pose


def sweep_poses(
    spec: ArmSpec,
    gripper: tuple[float, float],
    ranges: Mapping[str, tuple[float, float]],
    duration_s: float = SWEEP_S,
) -> np.ndarray:
    """(n, 7) poses, one per wait(): each joint in turn from near its lower limit to near its upper,
    the others at zero, then the gripper from closed to open."""
    steps = max(2, round(duration_s / WAIT_S / len(spec.joints)))
    poses = []
    for index, joint in enumerate(spec.joints):
        if joint == "gripper":
            start, end = gripper
        else:
            lower, upper = ranges[joint]
            start, end = lower + SWEEP_MARGIN_RAD, upper - SWEEP_MARGIN_RAD
        segment = np.tile(zero_pose(gripper), (steps, 1))
        segment[:, index] = np.linspace(start, end, steps)
        poses.append(segment)
    return np.concatenate(poses)
