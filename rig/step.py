"""The shared module: the records and contracts every layer may import.

What one control tick saw and did (`Step`), what a mode or a policy sees at a tick (`Observation`),
and what an action source must offer autonomous mode (`ActionSource`, with its news in `Reporting`).
This module imports nothing of ours (and `rig/__init__` only names the version), so the recorder,
the policy and the TUI read these without pulling in drivers, the loop or each other;
tests/test_layers.py keeps it that way.

Joint vectors are 14 long: the left arm's six joint angles (rad) and its gripper opening
(normalized, 0 closed .. 1 open), then the same for the right arm — the layout ALOHA datasets and
π0's ALOHA policies use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

JOINTS_PER_ARM = 7
GRIPPER = 6  # index of the gripper within an arm's seven values
SIDES = ("left", "right")
STATE_DIM = JOINTS_PER_ARM * len(SIDES)
# The loop's mode labels (`Step.mode`): the modes' names, "intervention" while the operator has taken
# an arm pair from the policy, and "e-stop". Recorded as an index into this tuple, so only append.
MODES = ("idle", "teleop", "autonomous", "intervention", "replay", "move", "park", "e-stop")


@dataclass(frozen=True, eq=False)
class CameraSample:
    """A camera's latest frame as the tick saw it."""

    image: np.ndarray  # (h, w, 3) uint8 RGB
    timestamp_ms: float  # the device's timestamp (simulated time on the twin)
    frame_number: int
    age_s: float  # how long before the tick the frame arrived


@dataclass(frozen=True, eq=False)
class Step:
    """One tick of the control loop."""

    index: int
    t: float  # seconds on the rig's clock (simulated time on the twin)
    qpos: np.ndarray  # (14,) follower positions
    qvel: np.ndarray  # (14,) follower velocities (rad/s; gripper in openings/s)
    effort: np.ndarray  # (14,) follower motor currents (mA)
    action: np.ndarray  # (14,) the follower goal sent this tick
    leader: np.ndarray | None  # (14,) leader positions, when the rig has leaders
    mode: str  # one of MODES
    cameras: Mapping[str, CameraSample] = field(default_factory=lambda: MappingProxyType({}))
    period_error_s: float = 0.0  # how late the tick started against its deadline
    overruns: int = 0  # ticks so far that started after their successor's deadline
    events: tuple[str, ...] = ()  # safety findings raised at this tick
    policy_action: np.ndarray | None = None  # (14,) the policy's proposal this tick, None when none runs


def arm_slice(side: str) -> slice:
    """Where an arm's seven values sit in a 14-vector."""
    start = SIDES.index(side) * JOINTS_PER_ARM
    return slice(start, start + JOINTS_PER_ARM)


@dataclass(frozen=True, eq=False)
class Observation:
    """What a mode (and through autonomous mode, a policy's scheduler) sees at a tick (14-vectors)."""

    index: int
    t: float
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    leader: np.ndarray | None
    command: np.ndarray  # the goal sent at the previous tick
    cameras: Mapping[str, CameraSample] = field(default_factory=lambda: MappingProxyType({}))


class Reporting(Protocol):
    """Something the loop asks, after each action, for what happened since: a lost policy, a rejected
    chunk, an operator's take-over, in words (they become the step's `events`)."""

    def take_events(self) -> list[str]: ...


class ActionSource(Reporting, Protocol):
    """What autonomous mode runs: a policy's action scheduler, a replay, a remote policy client."""

    def next_action(self, obs: Observation) -> np.ndarray | None:
        """The followers' goal (14,) for this tick, or None when nothing is ready."""
        ...
