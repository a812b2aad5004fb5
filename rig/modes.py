"""Modes: strategies that produce the followers' goal for each tick.

The loop asks the current mode for an action given what the tick observed; switching modes is
one assignment at a tick boundary, and the loop blends from the old goal to the new mode's so the
arms never jump. A mode that returns None delivered nothing this tick: the loop holds and its
watchdog counts.

Autonomous mode is handed an *action source* (rig.step.ActionSource), so this module, like the
loop, never imports the model. Every blend between goals is a `Ramp`; how long each engage ramp
takes is in `RAMPS`.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rig.step import SIDES, ActionSource, Observation, Reporting, arm_slice

__all__ = ["RAMPS", "ActionSource", "Autonomous", "Hold", "Mode", "MoveTo", "Observation", "Ramp", "Teleop"]


@dataclass(frozen=True)
class EngageRamps:
    """How long (seconds on the rig clock) the followers blend from their goal to a new mode's, so the
    arms never jump: every engage ramp of the rig, in one place."""

    teleop_s: float = 2.0  # to the leaders' pose before copying them: the leaders may be far away
    autonomy_s: float = 0.5  # into a policy's actions from teleop (`rig run`, the terminal app)
    eval_autonomy_s: float = 0.2  # `rig eval`: the policy starts from the demonstrations' start pose
    intervention_s: float = 0.5  # between the policy's goal and a leader's, both ways
    default_s: float = 1.0  # a switch that names no ramp
    replay_move_s: float = 2.0  # a replay's way to the episode's first action
    rest_s: float = 2.0  # the move to the rest pose on stop
    demonstration_start_s: float = 2.0  # on the twin, the terminal app: the way to a demonstration's start
    eval_reset_s: float = 2.0  # `rig eval`: the followers' way back to the start pose between episodes
    bench_teleop_s: float = 0.5  # `rig bench loop`: into teleop before the ticks are timed
    bench_demonstration_s: float = 0.2  # `rig bench teleop`: into teleop, and the demonstration's delay


RAMPS = EngageRamps()


def blend(origin: np.ndarray, target: np.ndarray, fraction: float) -> np.ndarray:
    """The point `fraction` (0..1) of the way from `origin` to `target`, in joint space."""
    return origin + fraction * (np.asarray(target) - origin)


class Ramp:
    """A straight line from `origin` to a target that may move, over `ticks` calls, then the target
    itself: the loop's blend between modes and autonomous mode's between policy and leader."""

    def __init__(self, origin: np.ndarray, ticks: int) -> None:
        self.origin, self.ticks, self.tick = origin.copy(), max(1, ticks), 0

    @property
    def done(self) -> bool:
        return self.tick >= self.ticks

    def toward(self, target: np.ndarray) -> np.ndarray:
        self.tick = min(self.tick + 1, self.ticks)
        return blend(self.origin, target, self.tick / self.ticks)


class Mode(Reporting, Protocol):
    """What the loop asks each tick: a goal, then what happened (`take_events`) and, for autonomous
    mode, what the policy proposed (`proposal`) while the operator may hold an arm."""

    @property
    def name(self) -> str:
        """The label steps carry while this mode drives."""
        ...

    @property
    def proposal(self) -> np.ndarray | None:
        """The policy's own action (14,) this tick, or None when no policy runs."""
        ...

    def action(self, obs: Observation) -> np.ndarray | None:
        """The followers' goal (14,), or None when this mode has nothing for this tick."""
        ...


class QuietMode:
    """A mode with no policy and no news: no proposal, no events."""

    proposal: np.ndarray | None = None

    def take_events(self) -> list[str]:
        return []


class Hold(QuietMode):
    """Idle: keep the last goal, so the arms stay where they are."""

    name = "idle"

    def action(self, obs: Observation) -> np.ndarray | None:
        return obs.command


class Teleop(QuietMode):
    """The followers copy the leaders."""

    name = "teleop"

    def action(self, obs: Observation) -> np.ndarray | None:
        return obs.leader


class Replay(QuietMode):
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


class MoveTo(QuietMode):
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
        return blend(origin, self._target, alpha)


@dataclass(frozen=True)
class InterventionConfig:
    """When the operator takes an arm pair back from the policy (DAgger-style interventions)."""

    threshold_rad: float = 0.15  # leader displacement from where it rested that means a hand is on it
    ramp_s: float = RAMPS.intervention_s  # blend between the policy's goal and the leader's, both ways
    rate_hz: float | None = None  # the loop's (the profile's); None: learnt from the first two ticks


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
        self._taken: dict[str, Ramp] = {}  # side → blend from the policy's goal to the leader
        self._returning: dict[str, Ramp] = {}  # side → blend from the leader back to the policy
        self._events: list[str] = []
        self._rate_hz = self.config.rate_hz
        self._first_t: float | None = None

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
        return events + self.source.take_events()

    def action(self, obs: Observation) -> np.ndarray | None:
        self._learn_rate(obs)
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

    def _learn_rate(self, obs: Observation) -> None:
        """The loop's rate from its clock, when not given: the ticks are evenly spaced on it."""
        if self._rate_hz is not None:
            return
        if self._first_t is None or obs.t <= self._first_t:
            self._first_t = obs.t
            return
        self._rate_hz = 1.0 / (obs.t - self._first_t)

    def _blend(self, origin: np.ndarray) -> Ramp:
        rate = self._rate_hz or 1.0 / RAMPS.default_s  # a take-over at the very first tick: a short ramp
        return Ramp(origin, round(self.config.ramp_s * rate))
