"""The action scheduler: one action per control tick from a policy that answers in chunks, late.

The loop cannot wait for the model (a chunk takes longer than a tick), so inference runs elsewhere
(an `InferenceExecutor`) and the scheduler decides each tick which planned action to send. A chunk
requested at tick T plans ticks T, T+1, …; the strategies differ in when they ask and how they move
from one chunk to the next:

- `rtc`: ask every `execute` ticks while the current chunk keeps executing; on arrival at T' carry on
  at the new chunk's index T' − T. The old chunk's remaining actions go along as `Guidance`, so the
  new chunk agrees with the ones that executed while the model thought (real-time chunking).
- `naive`: the same schedule without guidance: the plans may disagree at every switch.
- `sync`: openpi's runtime: execute `execute` actions, then hold while the next chunk is computed.
- `ensemble`: ACT's temporal ensembling: ask again as soon as a reply arrives and send, for each
  tick, the exp(−m·i)-weighted mean of every chunk's plan for it (i = 0 the oldest).

Held ticks send the previous goal (`obs.command`): the arms stay still. A reply that fails, never
comes, or must not reach the arms (NaN, outside the joint ranges) is recorded as an event and the
scheduler returns None from then on, so the loop's watchdog holds and leaves autonomous mode.
"""

from __future__ import annotations

import copy
import functools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import numpy as np

from policy.interface import Guidance, Policy, PolicyObservation
from rig.step import STATE_DIM, Observation

Strategy = Literal["rtc", "sync", "naive", "ensemble"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


# -- where inference runs ---------------------------------------------------------------------------
class Pending(Protocol[T_co]):
    def result(self, tick: int) -> T_co | None:
        """The call's value once it is ready at `tick`, None before; raises what the call raised."""
        ...


class InferenceExecutor(Protocol):
    """Runs a call off the loop thread; the loop polls the `Pending` it gets back once per tick."""

    def submit(self, tick: int, call: Callable[[], T]) -> Pending[T]: ...

    def close(self) -> None: ...


class _Job(Generic[T]):
    """One call and its outcome; ready once it has run and, for simulated latency, `ready_tick` came."""

    def __init__(self, call: Callable[[], T], ready_tick: int | None = None) -> None:
        self._call, self._ready_tick = call, ready_tick
        self._done = threading.Event()
        self._value: T | None = None
        self._error: Exception | None = None

    def run(self) -> None:
        try:
            self._value = self._call()
        except Exception as error:  # the caller sees it at result(), on its own thread
            self._error = error
        finally:
            self._done.set()

    def result(self, tick: int) -> T | None:
        if not self._done.is_set() or (self._ready_tick is not None and tick < self._ready_tick):
            return None
        if self._error is not None:
            raise self._error
        return self._value


class ThreadExecutor:
    """One worker thread runs the calls in order. It is a daemon: a policy that never answers blocks
    only the worker (the scheduler's timeout notices), never the process's exit."""

    def __init__(self, name: str = "policy-inference") -> None:
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, tick: int, call: Callable[[], T]) -> Pending[T]:
        if self._closed:
            raise RuntimeError("the inference executor is closed")
        job = _Job(call)
        self._jobs.put(job)
        return job

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run()


class TickDelayExecutor:
    """Runs each call at once and releases its result `delay_ticks` ticks later: inference latency
    made deterministic, for tests and for benches that compare strategies under the same delay."""

    def __init__(self, delay_ticks: int) -> None:
        if delay_ticks < 0:
            raise ValueError("delay_ticks cannot be negative")
        self.delay_ticks = delay_ticks

    def submit(self, tick: int, call: Callable[[], T]) -> Pending[T]:
        job = _Job(call, ready_tick=tick + self.delay_ticks)
        job.run()
        return job

    def close(self) -> None:
        pass


# -- the scheduler ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SchedulerConfig:
    strategy: Strategy = "rtc"
    execute: int = 25  # s: actions executed per request (rtc, naive, sync)
    ensemble_decay: float = 0.01  # ACT's m: weights exp(−m·i), i = 0 the oldest prediction
    bounds: tuple[np.ndarray, np.ndarray] | None = None  # (lower, upper) joint ranges, (14,) each
    # How far outside the ranges a chunk may plan before it is rejected as nonsense (rad; gripper
    # openings): the loop clamps and reports smaller overshoots, and a model trained on moves that
    # touch a limit (a gripper opened fully) predicts past it now and then.
    bounds_margin: float = 0.5
    reply_timeout_ticks: int | None = None  # held ticks to wait for a late reply (sync: any); None: horizon
    startup_timeout_ticks: int = 500  # for the first reply: a first call warms kernels and caches up
    delay_window: int = 10  # rtc's delay estimate is the max of this many recent delays

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.execute < 1 or self.delay_window < 1:
            raise ValueError("execute and delay_window must be at least 1")
        if self.ensemble_decay < 0 or self.bounds_margin < 0:
            raise ValueError("ensemble_decay and bounds_margin cannot be negative")
        if min(self.reply_timeout_ticks or 0, self.startup_timeout_ticks) < 0:
            raise ValueError("reply_timeout_ticks and startup_timeout_ticks cannot be negative")
        if self.bounds is not None:
            lower, upper = (np.asarray(b, dtype=np.float64) for b in self.bounds)
            if lower.shape != (STATE_DIM,) or upper.shape != (STATE_DIM,) or np.any(lower > upper):
                raise ValueError(f"bounds must be (lower, upper) of shape ({STATE_DIM},) with lower ≤ upper")
            object.__setattr__(self, "bounds", (lower, upper))


@dataclass
class SchedulerStats:
    """What the scheduler did so far. `ActionScheduler.stats` hands out a copy."""

    chunks: int = 0  # replies accepted
    delays_ticks: list[int] = field(default_factory=list)  # T' − T per accepted reply
    delays_s: list[float] = field(default_factory=list)  # the policy call's wall time per reply
    switch_ticks: list[int] = field(default_factory=list)  # ticks at which a new chunk first acted
    startup_ticks: int = 0  # held before the first chunk
    starved_ticks: int = 0  # held because a chunk ran out before the next arrived (rtc, naive, ensemble)
    waiting_ticks: int = 0  # held by design while sync waits for its next chunk
    rejected: int = 0  # chunks refused: wrong shape, non-finite, or outside the bounds
    events: list[str] = field(default_factory=list)


class PolicyLost(RuntimeError):
    """The policy's reply failed, never came, or must not reach the arms."""


@dataclass(frozen=True, eq=False)
class _Chunk:
    actions: np.ndarray  # (n, 14): the actions this strategy may execute
    start: int  # the tick actions[0] belongs to

    def at(self, tick: int) -> np.ndarray | None:
        index = tick - self.start
        return self.actions[index] if 0 <= index < len(self.actions) else None


@dataclass(frozen=True, eq=False)
class _Reply:
    actions: np.ndarray
    seconds: float


@dataclass(frozen=True, eq=False)
class _Request:
    tick: int
    moved: int  # the scheduler's count of executed ticks when it asked
    pending: Pending[_Reply]


def _timed_infer(policy: Policy, observation: PolicyObservation, guidance: Guidance | None) -> _Reply:
    start = time.perf_counter()
    actions = policy.infer(observation, guidance)
    return _Reply(np.asarray(actions, dtype=np.float64), time.perf_counter() - start)


class ActionScheduler:
    """An `ActionSource` for autonomous mode; call `next_action` from the loop thread only.

    A chunk is anchored where it takes over: when it arrives at T' after e ticks of executed actions
    since its request (e = T' − T unless the arms held in between), its action e goes to tick T'.
    So the ticks executed while the model thought are never replayed, and a chunk that arrives
    while the arms hold (start-up, sync) starts at its action 0, from where the arms are.
    """

    def __init__(
        self,
        policy: Policy,
        prompt: str,
        config: SchedulerConfig | None = None,
        executor: InferenceExecutor | None = None,
    ) -> None:
        self.policy, self.prompt, self.config = policy, prompt, config or SchedulerConfig()
        info = policy.info()
        self.horizon, self._cameras = info.action_horizon, frozenset(info.cameras)
        if self.config.execute > self.horizon:
            raise ValueError(f"execute ({self.config.execute}) exceeds the policy's horizon ({self.horizon})")
        timeout = self.config.reply_timeout_ticks
        self._timeout = self.horizon if timeout is None else timeout
        self._owns_executor = executor is None
        self._executor: InferenceExecutor = executor or ThreadExecutor()
        self._chunks: list[_Chunk] = []  # the executing chunk; every live one for ensemble, oldest first
        self._request: _Request | None = None
        self._asked_at_moved = -self.config.execute  # so that the first tick asks
        self._moved = 0  # ticks that executed a planned action
        self._held_since: int | None = None
        self._failed = False
        self._stats = SchedulerStats()
        self._events_taken = 0

    @property
    def stats(self) -> SchedulerStats:
        return copy.deepcopy(self._stats)

    @property
    def failed(self) -> bool:
        return self._failed

    def take_events(self) -> list[str]:
        """Events since the last call (the loop puts them in its steps, so the operator sees them)."""
        events = self._stats.events[self._events_taken :]
        self._events_taken = len(self._stats.events)
        return events

    def delay_estimate(self) -> int:
        """rtc's frozen prefix d: the largest recent delay in ticks, at most horizon − execute."""
        recent = self._stats.delays_ticks[-self.config.delay_window :]
        return min(max(recent, default=0), self.horizon - self.config.execute)

    def next_action(self, obs: Observation) -> np.ndarray | None:
        if self._failed:
            return None
        try:
            self._receive(obs.index)
            if self._due():
                self._ask(obs)
                self._receive(obs.index)
            action = self._planned(obs.index)
            if action is None:
                return self._hold(obs)
        except PolicyLost as lost:
            self._fail(obs.index, str(lost))
            return None
        self._moved += 1
        self._held_since = None
        return action

    def close(self) -> None:
        if self._owns_executor:
            self._executor.close()

    def __enter__(self) -> ActionScheduler:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- asking -------------------------------------------------------------------------------------
    def _due(self) -> bool:
        if self._request is not None:
            return False
        return self.config.strategy == "ensemble" or self._moved - self._asked_at_moved >= self.config.execute

    def _ask(self, obs: Observation) -> None:
        observation = PolicyObservation(
            state=np.array(obs.qpos, dtype=np.float64),
            images={name: np.array(s.image) for name, s in obs.cameras.items() if name in self._cameras},
            prompt=self.prompt,
        )
        call = functools.partial(_timed_infer, self.policy, observation, self._guidance(obs.index))
        try:
            pending = self._executor.submit(obs.index, call)
        except Exception as error:
            raise PolicyLost(f"could not ask the policy: {type(error).__name__}: {error}") from error
        self._request = _Request(obs.index, self._moved, pending)
        self._asked_at_moved = self._moved

    def _guidance(self, tick: int) -> Guidance | None:
        """rtc: what the executing chunk still plans from this tick on, the new chunk's step 0."""
        if self.config.strategy != "rtc" or not self._chunks:
            return None
        current = self._chunks[-1]
        remaining = current.actions[max(tick - current.start, 0) :]
        if len(remaining) == 0:
            return None
        return Guidance(remaining.copy(), self.delay_estimate(), self.config.execute)

    # -- receiving ----------------------------------------------------------------------------------
    def _receive(self, tick: int) -> None:
        request = self._request
        if request is None:
            return
        try:
            reply = request.pending.result(tick)
        except Exception as error:
            raise PolicyLost(
                f"the policy's reply to tick {request.tick}'s request failed: {type(error).__name__}: {error}"
            ) from error
        if reply is None:
            return
        self._request = None
        actions = self._checked(reply.actions, request.tick)
        if self.config.strategy == "sync":
            actions = actions[: self.config.execute]
        chunk = _Chunk(actions, start=tick - (self._moved - request.moved))
        self._chunks = [*self._chunks, chunk] if self.config.strategy == "ensemble" else [chunk]
        stats = self._stats
        stats.chunks += 1
        stats.delays_ticks.append(tick - request.tick)
        stats.delays_s.append(reply.seconds)
        stats.switch_ticks.append(tick)

    def _checked(self, actions: np.ndarray, asked: int) -> np.ndarray:
        problem = self._problem(actions)
        if problem is None:
            return actions
        self._stats.rejected += 1
        raise PolicyLost(f"rejected the chunk asked for at tick {asked}: {problem}")

    def _problem(self, actions: np.ndarray) -> str | None:
        if actions.shape != (self.horizon, STATE_DIM):
            return f"shape {actions.shape}, expected ({self.horizon}, {STATE_DIM})"
        if not np.all(np.isfinite(actions)):
            return "non-finite actions (NaN or inf)"
        if self.config.bounds is None:
            return None
        margin = self.config.bounds_margin
        lower, upper = self.config.bounds[0] - margin, self.config.bounds[1] + margin
        outside = (actions < lower) | (actions > upper)
        if not outside.any():
            return None
        step, joint = (int(i) for i in np.argwhere(outside)[0])
        return (
            f"action {step} puts joint {joint} at {actions[step, joint]:.3f}, outside "
            f"[{lower[joint]:.3f}, {upper[joint]:.3f}] (the joint range with a {margin} margin)"
        )

    # -- acting -------------------------------------------------------------------------------------
    def _planned(self, tick: int) -> np.ndarray | None:
        """This tick's action from the chunks, or None when none plans it."""
        self._chunks = [c for c in self._chunks if tick - c.start < len(c.actions)]
        plans = [action for c in self._chunks if (action := c.at(tick)) is not None]
        if not plans:
            return None
        if len(plans) == 1:
            return plans[0].copy()  # the chunk stays ours: rtc's guidance reads it later
        weights = np.exp(-self.config.ensemble_decay * np.arange(len(plans)))
        return np.asarray(weights @ np.stack(plans) / weights.sum())

    def _hold(self, obs: Observation) -> np.ndarray | None:
        tick, stats = obs.index, self._stats
        if self._held_since is None:
            self._held_since = tick
            if stats.chunks and self.config.strategy != "sync":
                stats.events.append(f"tick {tick}: the chunk ran out before the next reply; holding")
        patience = self._timeout if stats.chunks else self.config.startup_timeout_ticks
        if tick - self._held_since >= patience:
            asked = "" if self._request is None else f" to tick {self._request.tick}'s request"
            raise PolicyLost(f"no reply{asked} after holding {patience} ticks")
        if not stats.chunks:
            stats.startup_ticks += 1
        elif self.config.strategy == "sync":
            stats.waiting_ticks += 1
        else:
            stats.starved_ticks += 1
        return obs.command

    def _fail(self, tick: int, message: str) -> None:
        self._failed = True
        self._chunks, self._request = [], None
        self._stats.events.append(f"tick {tick}: {message}; the policy is lost, the loop holds")
