"""Modes: strategies that produce the followers' goal for each tick.

The loop asks the current mode for an action given what the tick observed; switching modes is
one assignment at a tick boundary, and the loop blends from the old goal to the new mode's so the
arms never jump. A mode that returns None delivered nothing this tick: the loop holds and its
watchdog counts.

Autonomous mode is handed an *action source* (anything with `next_action(observation)`), so this
module, like the loop, never imports the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from rig.step import CameraSample


@dataclass(frozen=True, eq=False)
class Observation:
    """What a mode sees at a tick (14-vectors, see rig.step)."""

    index: int
    t: float
    qpos: np.ndarray
    qvel: np.ndarray
    effort: np.ndarray
    leader: np.ndarray | None
    command: np.ndarray  # the goal sent at the previous tick
    cameras: Mapping[str, CameraSample] = field(default_factory=lambda: MappingProxyType({}))


class Mode(Protocol):
    name: str

    def action(self, obs: Observation) -> np.ndarray | None:
        """The followers' goal (14,), or None when this mode has nothing for this tick."""
        ...


class ActionSource(Protocol):
    """What autonomous mode runs: a policy's action scheduler, a replay, a remote policy client."""

    def next_action(self, obs: Observation) -> np.ndarray | None: ...


class Hold:
    """Idle: keep the last goal, so the arms stay where they are."""

    name = "idle"

    def action(self, obs: Observation) -> np.ndarray | None:
        return obs.command


class Teleop:
    """The followers copy the leaders."""

    name = "teleop"

    def action(self, obs: Observation) -> np.ndarray | None:
        return obs.leader


class Replay:
    """Plays recorded actions, one per tick, then holds the last."""

    name = "replay"

    def __init__(self, actions: np.ndarray) -> None:
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"replay needs a (T, 14) array of actions, got shape {actions.shape}")
        self._actions = actions
        self._next = 0

    @property
    def finished(self) -> bool:
        return self._next >= len(self._actions)

    def action(self, obs: Observation) -> np.ndarray | None:
        index = min(self._next, len(self._actions) - 1)
        self._next += 1
        return self._actions[index]


class MoveTo:
    """A straight line in joint space from wherever the goal is to `target`, over `duration` seconds
    of the rig's clock: how the rig starts from and returns to its rest pose."""

    name = "move"

    def __init__(self, target: np.ndarray, duration: float) -> None:
        self._target = np.asarray(target, dtype=np.float64)
        self._duration = max(duration, 1e-6)
        self._start: tuple[float, np.ndarray] | None = None
        self.finished = False

    def action(self, obs: Observation) -> np.ndarray | None:
        if self._start is None:
            self._start = (obs.t, obs.command.copy())
        t0, origin = self._start
        alpha = min(1.0, (obs.t - t0) / self._duration)
        self.finished = alpha >= 1.0
        return origin + alpha * (self._target - origin)


class Autonomous:
    """The policy drives: each tick takes the action source's next action."""

    name = "autonomous"

    def __init__(self, source: ActionSource) -> None:
        self.source = source

    def action(self, obs: Observation) -> np.ndarray | None:
        return self.source.next_action(obs)
