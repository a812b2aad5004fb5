"""Per-arm calibration: servo ticks <-> joint angles, joint ranges, and the gripper map.

An arm's seven values are six joint angles in radians and the gripper opening normalized to
0 (closed) .. 1 (open). Normalizing the gripper is what lets a leader with a small handle drive a
follower with a large gripper (ALOHA's gripper map): leader angle -> opening -> follower angle.

A calibration is a small JSON file per arm, found by `rig calibrate` and reused on the next start.
Without one, an arm uses its profile: the servos' own zero (Interbotix arms leave the factory
calibrated so), the model's joint limits, and the profile's gripper angles.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from hardware.dynamixel.control_table import CENTER_TICK, RAD_PER_TICK, RAD_S_PER_UNIT
from hardware.profile import ArmSpec, Profile, RobotSpec
from rig.paths import data_dir
from rig.step import GRIPPER, JOINTS_PER_ARM


@dataclass(frozen=True)
class JointCalibration:
    """`offset` ticks are added to the servo's reading so that the joint's zero reads as the centre
    tick; `sign` flips a joint mounted the other way; `lower`/`upper` bound the joint (rad, or the
    normalized opening for the gripper)."""

    offset: int = 0
    sign: int = 1
    lower: float = -math.pi
    upper: float = math.pi


@dataclass(frozen=True)
class ArmCalibration:
    arm: str
    joints: Mapping[str, JointCalibration]  # in the profile's joint order, gripper last
    gripper_closed: float  # gripper servo angle (rad) fully closed
    gripper_open: float  # ... and fully open

    def __post_init__(self) -> None:
        if len(self.joints) != JOINTS_PER_ARM or list(self.joints)[GRIPPER] != "gripper":
            raise ValueError(
                f"{self.arm}: a calibration needs 7 joints with the gripper last, got {list(self.joints)}"
            )
        if self.gripper_open == self.gripper_closed:
            raise ValueError(f"{self.arm}: gripper open and closed angles are equal")

    @cached_property
    def _offsets(self) -> np.ndarray:
        return np.array([j.offset for j in self.joints.values()], dtype=np.int64)

    @cached_property
    def _signs(self) -> np.ndarray:
        return np.array([j.sign for j in self.joints.values()], dtype=np.float64)

    # ---- limits ----------------------------------------------------------------------------
    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints.values()])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints.values()])

    # ---- conversions -----------------------------------------------------------------------
    def _span(self) -> float:
        return self.gripper_open - self.gripper_closed

    def angles(self, ticks: np.ndarray) -> np.ndarray:
        """Servo positions (ticks) -> motor angles (rad), the gripper still as an angle."""
        return self._signs * (np.asarray(ticks, dtype=np.int64) + self._offsets - CENTER_TICK) * RAD_PER_TICK

    def positions(self, ticks: np.ndarray) -> np.ndarray:
        """Servo positions (ticks) -> six joint angles and the normalized gripper opening."""
        values = self.angles(ticks)
        values[GRIPPER] = self.gripper_opening(values[GRIPPER])
        return values

    def velocities(self, units: np.ndarray) -> np.ndarray:
        """Servo velocities (0.229 rpm units) -> rad/s, the gripper in openings per second."""
        values = self._signs * np.asarray(units, dtype=np.float64) * RAD_S_PER_UNIT
        values[GRIPPER] /= self._span()
        return values

    def goal_ticks(self, values: np.ndarray) -> np.ndarray:
        """Six joint angles and a normalized opening -> goal positions (ticks)."""
        angles = np.array(values, dtype=np.float64)
        angles[GRIPPER] = self.gripper_angle(angles[GRIPPER])
        return np.rint(angles / RAD_PER_TICK * self._signs + CENTER_TICK - self._offsets).astype(np.int64)

    def gripper_opening(self, angle: float) -> float:
        """Gripper servo angle -> opening, 0 closed .. 1 open (not clipped: a reading may overshoot)."""
        return float((angle - self.gripper_closed) / self._span())

    def gripper_angle(self, opening: float) -> float:
        return float(self.gripper_closed + opening * self._span())

    # ---- files -----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "arm": self.arm,
                "joints": {name: asdict(joint) for name, joint in self.joints.items()},
                "gripper_closed": self.gripper_closed,
                "gripper_open": self.gripper_open,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ArmCalibration:
        data = json.loads(text)
        return cls(
            arm=data["arm"],
            joints={name: JointCalibration(**joint) for name, joint in data["joints"].items()},
            gripper_closed=float(data["gripper_closed"]),
            gripper_open=float(data["gripper_open"]),
        )


def default_calibration(name: str, arm: ArmSpec, robot: RobotSpec | None = None) -> ArmCalibration:
    """The profile's view of an arm: servo zero is joint zero, the robot's joint ranges (the profile's
    `[robot]`; None: ALOHA's), profile gripper angles."""
    ranges = (robot or RobotSpec()).joint_ranges
    joints = {}
    for joint in arm.joints:
        lower, upper = ranges.get(joint, (-math.pi, math.pi))
        joints[joint] = JointCalibration(lower=lower, upper=upper)
    return ArmCalibration(name, joints, gripper_closed=arm.gripper.closed, gripper_open=arm.gripper.open)


def default_calibrations(profile: Profile) -> dict[str, ArmCalibration]:
    """Every arm of a profile at its default calibration (no files involved)."""
    return {name: default_calibration(name, arm, profile.robot) for name, arm in profile.arms.items()}


def default_calibration_dir() -> Path:
    return data_dir() / "calibration"


@dataclass(frozen=True)
class CalibrationStore:
    """One JSON file per arm under `directory/<profile name>/`."""

    directory: Path

    def path(self, profile: str, arm: str) -> Path:
        return self.directory / profile / f"{arm}.json"

    def load(self, profile: str, arm: str, spec: ArmSpec, robot: RobotSpec | None = None) -> ArmCalibration:
        """The stored calibration, or the profile's default when there is none."""
        path = self.path(profile, arm)
        if not path.exists():
            return default_calibration(arm, spec, robot)
        try:
            calibration = ArmCalibration.from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"calibration {path} is unreadable ({exc}); run `rig calibrate --arm {arm}` again"
            ) from None
        if list(calibration.joints) != list(spec.joints):
            raise ValueError(
                f"calibration {path} is for joints {list(calibration.joints)}, "
                f"the profile has {list(spec.joints)}; run `rig calibrate --arm {arm}` again"
            )
        return calibration

    def save(self, profile: str, calibration: ArmCalibration) -> Path:
        """Written to a temporary file and renamed, so a crash never leaves half a calibration."""
        path = self.path(profile, calibration.arm)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(calibration.to_json())
        os.replace(tmp, path)
        return path
