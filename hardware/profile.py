"""Rig profiles: which arms on which ports, motors per joint, cameras by serial, the control rate.

A profile is a TOML file validated on load into frozen dataclasses; a wrong key or value is
reported with its full path (`arms.follower_left.joints.waist.motor: ...`). A profile may name a
`base` profile and override parts of it, so the twin's profile repeats none of the real rig's arms;
`enabled = false` in a camera's table drops that camera.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hardware.dynamixel.control_table import MODELS

PROFILES_DIR = Path(__file__).parent / "profiles"


Task = Literal["transfer_cube", "insertion"]  # the twin's tasks
TASKS: tuple[Task, ...] = typing.get_args(Task)  # for command-line choices


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class JointSpec:
    """One joint: its servo id and model, and the id of its shadow (second) motor if it has one."""

    id: int
    motor: str
    shadow: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.id <= 252:
            raise ValueError(f"id {self.id} is not a servo id (0..252)")
        if self.shadow is not None and not 0 <= self.shadow <= 252:
            raise ValueError(f"shadow {self.shadow} is not a servo id (0..252)")
        if self.motor not in MODELS:
            raise ValueError(f"motor {self.motor!r} is not one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class GripperSpec:
    """The gripper servo's angle (rad) when fully open and fully closed."""

    open: float
    closed: float


@dataclass(frozen=True)
class ArmSpec:
    role: Literal["leader", "follower"]
    side: Literal["left", "right"]
    port: str
    joints: Mapping[str, JointSpec]
    gripper: GripperSpec
    baudrate: int = 1_000_000

    @property
    def ids(self) -> list[int]:
        return [joint.id for joint in self.joints.values()]

    def __post_init__(self) -> None:
        ids = [j.id for j in self.joints.values()] + [
            j.shadow for j in self.joints.values() if j.shadow is not None
        ]
        if len(ids) != len(set(ids)):
            raise ValueError(f"servo ids repeat within the arm: {sorted(ids)}")
        if "gripper" not in self.joints:
            raise ValueError("an arm needs a joint named 'gripper'")


@dataclass(frozen=True)
class CameraSettings:
    serial: str
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = False
    view: str | None = None  # the twin's MuJoCo camera that stands in for this one

    def at_most_hz(self, hz: float) -> CameraSettings:
        """This camera delivering at most `hz` frames a second (on the twin: rendering that often)."""
        return dataclasses.replace(self, fps=max(1, round(min(self.fps, hz))))


@dataclass(frozen=True)
class RobotSpec:
    """What the arms are, beyond their servos: each arm's joints in order (gripper last), their ranges
    (rad; the gripper's as the normalized opening), where the followers rest, how hard the follower
    gripper may squeeze. The defaults are ALOHA's ViperX/WidowX arms, as in their URDF and the
    twin's MJCF; hardware/profiles/aloha.toml states them too."""

    joint_ranges: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: types.MappingProxyType(
            {
                "waist": (-3.14158, 3.14158),
                "shoulder": (-1.85005, 1.25664),
                "elbow": (-1.76278, 1.6057),
                "forearm_roll": (-3.14158, 3.14158),
                "wrist_angle": (-1.8675, 2.23402),
                "wrist_rotate": (-3.14158, 3.14158),
                "gripper": (0.0, 1.0),
            }
        )
    )
    rest_pose: tuple[float, ...] = (0.0, -1.80, 1.55, 0.0, 0.6, 0.0, 0.0)  # folded down, gripper closed
    gripper_current_limit: int = 300  # raw units: the follower gripper squeezes, it does not crush

    @property
    def joints(self) -> tuple[str, ...]:
        """An arm's joint names in the order of its values in a state vector."""
        return tuple(self.joint_ranges)

    def __post_init__(self) -> None:
        if len(self.rest_pose) != len(self.joint_ranges):
            raise ValueError(
                f"rest_pose has {len(self.rest_pose)} values for {len(self.joint_ranges)} joints"
            )
        if list(self.joint_ranges)[-1:] != ["gripper"]:
            raise ValueError("joint_ranges must list the gripper last")
        for joint, (lower, upper) in self.joint_ranges.items():
            if not lower < upper:
                raise ValueError(f"joint_ranges.{joint}: lower {lower} is not below upper {upper}")


@dataclass(frozen=True)
class TwinSpec:
    """Settings of the simulated twin; present only in twin profiles."""

    task: Task = "transfer_cube"
    lockstep: bool = True
    seed: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    arms: Mapping[str, ArmSpec]
    cameras: Mapping[str, CameraSettings]
    rate_hz: float = 50.0
    robot: RobotSpec = field(default_factory=RobotSpec)
    twin: TwinSpec | None = None
    description: str = ""
    source: str = field(default="", compare=False)

    def arms_with_role(self, role: str) -> dict[str, ArmSpec]:
        return {name: arm for name, arm in self.arms.items() if arm.role == role}

    def __post_init__(self) -> None:
        if not 1 <= self.rate_hz <= 1000:
            raise ValueError(f"rate_hz {self.rate_hz} is outside 1..1000")
        serials = [c.serial for c in self.cameras.values()]
        if len(serials) != len(set(serials)):
            raise ValueError(f"camera serials repeat: {serials}")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (`aloha`, `aloha-sim`) or a TOML file by path."""
    path = _resolve(name_or_path)
    data = _read_with_bases(path, seen=())
    data.pop("base", None)
    data.setdefault("name", path.stem)
    try:
        data["cameras"] = _enabled_cameras(data.get("cameras", {}))
        profile = _build(Profile, data, "")
    except ProfileError as exc:
        raise ProfileError(f"profile {path}: {exc}") from None
    return dataclasses.replace(profile, source=str(path))


def _enabled_cameras(cameras: Any) -> Any:
    """Drop cameras marked `enabled = false`: a derived profile can switch off what its base has."""
    if not isinstance(cameras, Mapping):
        return cameras
    kept = {}
    for name, table in cameras.items():
        if isinstance(table, Mapping):
            table = dict(table)
            enabled = table.pop("enabled", True)
            if not isinstance(enabled, bool):
                raise ProfileError(f"cameras.{name}.enabled: expected true or false, got {enabled!r}")
            if not enabled:
                continue
        kept[name] = table
    return kept


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise ProfileError(f"profile file {path} does not exist")
        return path
    builtin = PROFILES_DIR / f"{name_or_path}.toml"
    if not builtin.exists():
        raise ProfileError(
            f"no profile named {name_or_path!r}; built-in profiles: {', '.join(available_profiles())}"
        )
    return builtin


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ProfileError(f"profile {path}: `base` chain loops back to itself")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {path} is not valid TOML: {exc}") from None
    base = data.get("base")
    if base is None:
        return data
    if not isinstance(base, str):
        raise ProfileError(f"profile {path}: base: expected a profile name, got {base!r}")
    parent = _read_with_bases(_resolve(base), (*seen, path))
    parent.pop("name", None)
    parent.pop("description", None)
    return _merge(parent, data)


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _build(kind: Any, value: Any, path: str) -> Any:
    """Convert TOML data into `kind` (a dataclass, Mapping[str, X], Literal, optional or scalar)."""
    where = path or "profile"
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ProfileError(f"{where}: expected a table, got {value!r}")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind) if f.init}
        unknown = set(value) - set(fields)
        if unknown:
            raise ProfileError(
                f"{_join(path, sorted(unknown)[0])}: unknown key (expected one of {', '.join(fields)})"
            )
        missing = [
            name
            for name, f in fields.items()
            if name not in value
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ProfileError(f"{_join(path, missing[0])}: missing key")
        kwargs = {name: _build(hints[name], v, _join(path, name)) for name, v in value.items()}
        try:
            return kind(**kwargs)
        except ValueError as exc:
            raise ProfileError(f"{where}: {exc}") from None
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ProfileError(f"{where}: expected a table, got {value!r}")
        _, item_kind = typing.get_args(kind)
        return types.MappingProxyType({k: _build(item_kind, v, _join(path, k)) for k, v in value.items()})
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ProfileError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ProfileError(f"{where}: expected an array, got {value!r}")
        items = typing.get_args(kind)
        kinds = [items[0]] * len(value) if items[-1:] == (Ellipsis,) else list(items)
        if len(kinds) != len(value):
            raise ProfileError(f"{where}: expected {len(kinds)} values, got {len(value)}")
        return tuple(_build(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(kinds, value, strict=True)))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _build(options[0], value, path)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(kind, type) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    name = getattr(kind, "__name__", str(kind))
    raise ProfileError(f"{where}: expected {name}, got {value!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
