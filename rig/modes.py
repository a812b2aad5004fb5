"""Modes: strategies that produce the followers' goal for each tick.

The loop asks the current mode for an action given what the tick observed; switching modes is
one assignment at a tick boundary, and the loop blends from the old goal to the new mode's so the
arms never jump. A mode that returns None delivered nothing this tick: the loop holds and its
watchdog counts.

Autonomous mode is handed an *action source* (anything with `next_action(observation)`), so this
module, like the loop, never imports the model.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from rig.step import SIDES, CameraSample, arm_slice


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
    @property
    def name(self) -> str:
        """The label steps carry while this mode drives."""
        ...

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


@dataclass(frozen=True)
class InterventionConfig:
    """When the operator takes an arm pair back from the policy (DAgger-style interventions)."""

    threshold_rad: float = 0.15  # leader displacement from where it rested that means a hand is on it
    ramp_s: float = 0.5  # blend between the policy's goal and the leader's, both ways
    rate_hz: float = 50.0


class Autonomous:
    """The policy drives: each tick takes the action source's next action.

    The operator can take an arm pair back at any moment by moving its leader beyond a threshold
    (or with `take_over`): that follower then blends to and follows its leader while the policy keeps
    running, and its proposals are still published (`proposal`) so the recorder keeps both the
    human's and the policy's actions. `hand_back` returns the arm to the policy, again with a blend.
    While any arm is taken over the mode is labeled "intervention", which the recorder turns into a
    labeled segment of the episode.
    """

    def __init__(self, source: ActionSource, interventions: InterventionConfig | None = None) -> None:
        self.source = source
        self.config = interventions or InterventionConfig()
        self.proposal: np.ndarray | None = None
        self._requests: queue.SimpleQueue[tuple[str, str | None]] = queue.SimpleQueue()
        self._rest: np.ndarray | None = None  # the leaders' pose when they were last left alone
        self._taken: dict[str, _Blend] = {}  # side → blend from the policy's goal to the leader
        self._returning: dict[str, _Blend] = {}  # side → blend from the leader back to the policy
        self._events: list[str] = []

    @property
    def name(self) -> str:
        return "intervention" if self._taken else "autonomous"

    @property
    def taken_over(self) -> tuple[str, ...]:
        return tuple(self._taken)

    def take_over(self, side: str | None = None) -> None:
        """The operator takes an arm pair (None: both) — from a key; thread-safe."""
        self._requests.put(("take", side))

    def hand_back(self, side: str | None = None) -> None:
        """Give an arm pair (None: all taken) back to the policy; thread-safe."""
        self._requests.put(("give", side))

    def take_events(self) -> list[str]:
        """What happened since the last call, in words (the loop adds them to the step's events),
        the action source's news (a lost policy, a rejected chunk) included."""
        events, self._events = self._events, []
        source_events = getattr(self.source, "take_events", None)
        return events + (source_events() if source_events is not None else [])

    def action(self, obs: Observation) -> np.ndarray | None:
        proposal = self.source.next_action(obs)
        self.proposal = None if proposal is None else np.asarray(proposal, dtype=np.float64)
        self._handle_requests(obs)
        self._detect(obs)
        if not self._taken and not self._returning:
            return self.proposal
        goal = (self.proposal if self.proposal is not None else obs.command).copy()
        for side, blend in list(self._taken.items()):
            leader = obs.leader[arm_slice(side)] if obs.leader is not None else obs.command[arm_slice(side)]
            goal[arm_slice(side)] = blend.toward(leader)
        for side, blend in list(self._returning.items()):
            goal[arm_slice(side)] = blend.toward(goal[arm_slice(side)])
            if blend.done:
                del self._returning[side]
        return goal

    def _handle_requests(self, obs: Observation) -> None:
        while not self._requests.empty():
            kind, side = self._requests.get()
            sides = SIDES if side is None else (side,)
            for chosen in sides:
                if kind == "take" and chosen not in self._taken:
                    self._take(chosen, obs, "the take-over key")
                elif kind == "give" and chosen in self._taken:
                    del self._taken[chosen]
                    self._returning[chosen] = self._blend(obs.command[arm_slice(chosen)])
                    self._events.append(f"intervention: {chosen} arm handed back to the policy")
                    if obs.leader is not None and self._rest is not None:
                        self._rest[arm_slice(chosen)] = obs.leader[arm_slice(chosen)]

    def _detect(self, obs: Observation) -> None:
        if obs.leader is None:
            return
        if self._rest is None:
            self._rest = obs.leader.copy()
        for side in SIDES:
            if side in self._taken:
                continue
            moved = float(np.max(np.abs(obs.leader[arm_slice(side)] - self._rest[arm_slice(side)])))
            if moved > self.config.threshold_rad:
                self._take(side, obs, f"its leader moved {moved:.2f} rad")

    def _take(self, side: str, obs: Observation, why: str) -> None:
        self._returning.pop(side, None)
        self._taken[side] = self._blend(obs.command[arm_slice(side)])
        self._events.append(f"intervention: operator took the {side} arm ({why})")

    def _blend(self, origin: np.ndarray) -> _Blend:
        return _Blend(origin.copy(), max(1, round(self.config.ramp_s * self.config.rate_hz)))


class _Blend:
    """A straight line from `origin` to a moving target over `ticks` calls, then the target itself."""

    def __init__(self, origin: np.ndarray, ticks: int) -> None:
        self.origin, self.ticks, self.tick = origin, ticks, 0

    @property
    def done(self) -> bool:
        return self.tick >= self.ticks

    def toward(self, target: np.ndarray) -> np.ndarray:
        self.tick = min(self.tick + 1, self.ticks)
        return self.origin + (self.tick / self.ticks) * (np.asarray(target) - self.origin)
