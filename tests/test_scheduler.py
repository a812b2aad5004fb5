"""The action scheduler, driven tick by tick: when it asks, what it executes, how it fails.

The counting policy reads the request's tick from the state (the tests put the tick there) and
answers action i = tick + i, with the last joint holding the request's tick, so every executed
action says which tick it was planned for and which chunk planned it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from synthetic_store import synthetic_frame

from policy.bench_autonomy import AutonomyBenchSettings, bench_autonomy
from policy.infer import LocalPolicy
from policy.interface import Guidance, PolicyInfo, PolicyObservation
from policy.scheduler import (
    ActionScheduler,
    InferenceExecutor,
    SchedulerConfig,
    Strategy,
    ThreadExecutor,
    TickDelayExecutor,
)
from rig.cli import main
from rig.modes import Observation
from rig.step import STATE_DIM, CameraSample

HORIZON, EXECUTE = 10, 5
CAMERA = "cam_high"
FRAME = CameraSample(np.zeros((8, 8, 3), np.uint8), 0.0, 0, 0.0)
REST = np.full(STATE_DIM, -1.0)  # the goal before the policy's first action


class Counting:
    def __init__(self, fail: Callable[[int], np.ndarray | None] = lambda _: None) -> None:
        self.fail = fail  # request tick → a chunk to return instead (or raise)
        self.requests: list[tuple[int, Guidance | None]] = []

    def info(self) -> PolicyInfo:
        return PolicyInfo("counting", (CAMERA,), STATE_DIM, HORIZON, 1, 0)

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        tick = int(observation.state[0])
        assert set(observation.images) == {CAMERA}
        self.requests.append((tick, guidance))
        chunk = np.repeat(tick + np.arange(HORIZON, dtype=np.float64)[:, None], STATE_DIM, axis=1)
        chunk[:, -1] = tick
        replaced = self.fail(tick)
        return chunk if replaced is None else replaced


def observation(tick: int, qpos: np.ndarray, command: np.ndarray) -> Observation:
    zeros = np.zeros(STATE_DIM)
    return Observation(
        tick, tick * 0.02, qpos, zeros, zeros, None, command, MappingProxyType({CAMERA: FRAME})
    )


def drive(scheduler: ActionScheduler, ticks: int, pause_s: float = 0.0) -> list[np.ndarray | None]:
    """Run the ticks with the tick in the state; the command is the last action sent."""
    command, sent = REST, []
    for tick in range(ticks):
        action = scheduler.next_action(observation(tick, np.full(STATE_DIM, float(tick)), command))
        sent.append(action)
        command = command if action is None else action
        time.sleep(pause_s)
    return sent


def scheduler(policy: Counting, strategy: Strategy, delay: int, **config: Any) -> ActionScheduler:
    settings = SchedulerConfig(strategy=strategy, execute=EXECUTE, **config)
    return ActionScheduler(policy, "count", settings, TickDelayExecutor(delay))


def held(action: np.ndarray | None, before: np.ndarray | None) -> bool:
    return action is not None and before is not None and np.array_equal(action, before)


# -- rtc and naive: ask every `execute` ticks, switch at T' − T ----------------------------------------
@pytest.mark.parametrize("strategy", ["rtc", "naive"])
@pytest.mark.parametrize("delay", [0, 1, 3, HORIZON - EXECUTE])
def test_no_starved_tick_when_the_delay_fits(strategy: Strategy, delay: int) -> None:
    policy = Counting()
    with scheduler(policy, strategy, delay) as source:
        sent = drive(source, 80)
    stats = source.stats
    assert all(action is not None for action in sent)
    assert stats.starved_ticks == 0 and stats.waiting_ticks == 0 and stats.rejected == 0
    assert stats.startup_ticks == delay
    assert set(stats.delays_ticks) == {delay} and stats.chunks >= (80 - 2 * delay) // EXECUTE
    moving = sent[delay:]
    assert not any(held(a, b) for a, b in zip(moving[1:], moving, strict=False))


@pytest.mark.parametrize("strategy", ["rtc", "naive"])
def test_a_longer_delay_starves_and_holds(strategy: Strategy) -> None:
    delay = HORIZON - EXECUTE + 2
    with scheduler(Counting(), strategy, delay) as source:
        sent = drive(source, 80)
    stats = source.stats
    assert stats.starved_ticks > 0 and any("ran out" in event for event in stats.events)
    assert (
        sum(held(a, b) for a, b in zip(sent[delay + 1 :], sent[delay:], strict=False)) == stats.starved_ticks
    )
    assert all(action is not None for action in sent)  # starving holds; it does not give up


def test_the_frozen_prefix_executes_exactly_and_rtc_guidance_aligns() -> None:
    delay, policy = 3, Counting()
    with scheduler(policy, "rtc", delay) as source:
        sent = drive(source, 60)
    stats = source.stats
    assert [tick for tick, _ in policy.requests][:4] == [0, 8, 13, 18]  # start-up, then every 5 executed
    assert stats.switch_ticks[:4] == [3, 11, 16, 21]
    assert policy.requests[0][1] is None  # nothing executes yet: nothing to continue
    for (asked, guidance), arrived in zip(policy.requests[1:], stats.switch_ticks[1:], strict=False):
        old = int(sent[asked - 1][-1])  # type: ignore[index]
        for tick in range(asked, arrived):  # while the model thinks, the old chunk goes on
            assert sent[tick][-1] == old  # type: ignore[index]
        new = sent[arrived]
        assert new is not None and new[-1] == asked and new[0] == asked + (arrived - asked)  # index T' − T
        assert guidance is not None and guidance.frozen == delay and guidance.execute == EXECUTE
        np.testing.assert_array_equal(guidance.actions[:delay], np.stack(sent[asked:arrived]))  # type: ignore[arg-type]
        assert guidance.actions[0][-1] == old
    assert source.delay_estimate() == delay


def test_naive_sends_no_guidance_and_the_delay_estimate_is_capped() -> None:
    policy = Counting()
    with scheduler(policy, "naive", 3) as source:
        drive(source, 30)
    assert all(guidance is None for _, guidance in policy.requests)
    capped = Counting()
    with scheduler(capped, "rtc", HORIZON) as source:
        drive(source, 60)
    frozen = [guidance.frozen for _, guidance in capped.requests if guidance is not None]
    assert frozen and set(frozen) == {HORIZON - EXECUTE}


# -- sync and ensemble ------------------------------------------------------------------------------
def test_sync_executes_then_holds_while_it_waits() -> None:
    delay = 3
    with scheduler(Counting(), "sync", delay) as source:
        sent = drive(source, 3 + 4 * (EXECUTE + delay))
    stats = source.stats
    assert stats.starved_ticks == 0 and stats.startup_ticks == delay
    assert stats.waiting_ticks == 4 * delay and stats.chunks == 4
    arrivals = stats.switch_ticks
    assert arrivals == [delay + k * (EXECUTE + delay) for k in range(4)]
    for arrived in arrivals:
        executed = np.stack(sent[arrived : arrived + EXECUTE])  # type: ignore[arg-type]
        asked = arrived - delay
        np.testing.assert_array_equal(executed[:, 0], asked + np.arange(EXECUTE))  # from action 0
        for tick in range(arrived + EXECUTE, min(arrived + EXECUTE + delay, len(sent))):
            assert held(sent[tick], sent[tick - 1])


def test_ensemble_averages_every_chunks_plan_for_the_tick() -> None:
    decay = 0.5
    policy = Counting()
    with scheduler(policy, "ensemble", 0, ensemble_decay=decay) as source:
        sent = drive(source, 30)
    assert [tick for tick, _ in policy.requests] == list(range(30))  # delay 0: ACT asks every tick
    tick = 25
    asked = np.arange(tick - HORIZON + 1, tick + 1)  # the chunks that plan tick 25, oldest first
    weights = np.exp(-decay * np.arange(HORIZON))
    action = sent[tick]
    assert action is not None and action[0] == pytest.approx(tick)  # every chunk plans t for tick t
    assert action[-1] == pytest.approx(weights @ asked / weights.sum())

    with scheduler(Counting(), "ensemble", 3) as source:
        drive(source, 40)
    stats = source.stats
    assert stats.starved_ticks == 0 and stats.chunks == 39 // 3 and set(stats.delays_ticks) == {3}


# -- failures: an event, then None; never a jump ----------------------------------------------------
def _raise(tick: int) -> np.ndarray | None:
    if tick > 0:
        raise ValueError("boom")
    return None


def _nan(tick: int) -> np.ndarray | None:
    return np.full((HORIZON, STATE_DIM), np.nan) if tick > 0 else None


def _far(tick: int) -> np.ndarray | None:
    return np.full((HORIZON, STATE_DIM), 50.0) if tick > 0 else None


@pytest.mark.parametrize(
    ("fail", "words", "rejected"),
    [(_raise, "ValueError: boom", 0), (_nan, "non-finite", 1), (_far, "outside", 1)],
)
def test_a_failed_or_rejected_chunk_stops_the_policy(
    fail: Callable[[int], np.ndarray | None], words: str, rejected: int
) -> None:
    bounds = (np.full(STATE_DIM, -100.0), np.full(STATE_DIM, 40.0))
    with scheduler(Counting(fail), "rtc", 2, bounds=bounds) as source:
        sent = drive(source, 30)
    stats = source.stats
    failed_at = [action is None for action in sent].index(True)
    assert failed_at == 2 + EXECUTE + 2  # the second reply, when it arrives
    assert all(action is None for action in sent[failed_at:])  # from then on
    assert all(action is not None and action[0] < 40 for action in sent[:failed_at])
    assert stats.rejected == rejected and words in stats.events[-1] and source.failed


def test_a_lost_reply_holds_then_gives_up_within_the_timeout() -> None:
    release = threading.Event()

    def block(tick: int) -> np.ndarray | None:
        if tick > 0:
            release.wait()
        return None

    timeout = 4
    config = SchedulerConfig(execute=EXECUTE, reply_timeout_ticks=timeout)
    source = ActionScheduler(Counting(block), "count", config, ThreadExecutor())
    try:
        sent = drive(source, 80, pause_s=0.005)
    finally:
        release.set()
        source.close()
    stats = source.stats
    started = stats.startup_ticks
    assert stats.chunks == 1 and sent[started] is not None
    ran_out = started + HORIZON  # the first chunk is all there is
    assert all(held(sent[t], sent[t - 1]) for t in range(ran_out, ran_out + timeout))
    assert all(action is None for action in sent[ran_out + timeout :])
    assert "no reply" in stats.events[-1] and stats.starved_ticks == timeout


def test_a_scheduler_refuses_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="exceeds the policy's horizon"):
        ActionScheduler(Counting(), "x", SchedulerConfig(execute=HORIZON + 1), TickDelayExecutor(0))
    with pytest.raises(ValueError, match="strategy"):
        SchedulerConfig(strategy="later")  # type: ignore[arg-type]


def test_executors_release_results_when_ready() -> None:
    executor: InferenceExecutor = TickDelayExecutor(2)
    pending = executor.submit(5, lambda: 7)
    assert [pending.result(tick) for tick in (5, 6, 7)] == [None, None, 7]
    threaded = ThreadExecutor()
    done = threaded.submit(0, lambda: "chunk")
    deadline = time.monotonic() + 5
    while done.result(0) is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert done.result(0) == "chunk"
    threaded.close()
    with pytest.raises(RuntimeError, match="closed"):
        threaded.submit(1, lambda: 0)


class Recorded:
    """A policy that keeps every chunk it returned."""

    def __init__(self, policy: LocalPolicy) -> None:
        self.policy, self.chunks = policy, list[np.ndarray]()

    def info(self) -> PolicyInfo:
        return self.policy.info()

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        self.chunks.append(self.policy.infer(observation, guidance))
        return self.chunks[-1]


def frozen_prefix_deviation(checkpoint: Path, strategy: Strategy, delay: int = 3, ticks: int = 30) -> float:
    """Drive the tiny π0 (the state following its own actions) and return how far each new chunk's
    first `delay` actions stray from the old chunk's, which executed while it was computed."""
    policy = Recorded(LocalPolicy.from_checkpoint(checkpoint, device="cpu", seed=0))
    frames = {c: CameraSample(synthetic_frame(c, 0, (48, 64)), 0.0, 0, 0.0) for c in policy.info().cameras}
    config = SchedulerConfig(strategy=strategy, execute=EXECUTE)
    command, zeros = policy.policy.meta.normalizer.state.mean.astype(np.float64), np.zeros(STATE_DIM)
    sent: list[np.ndarray] = []
    with ActionScheduler(policy, "transfer the cube", config, TickDelayExecutor(delay)) as source:
        for tick in range(ticks):
            action = source.next_action(
                Observation(tick, tick * 0.02, command, zeros, zeros, None, command, frames)
            )
            assert action is not None
            sent.append(command := action)
    stats = source.stats
    assert stats.starved_ticks == 0 and stats.rejected == 0 and len(stats.switch_ticks) > 4
    return max(
        float(np.abs(chunk[:delay] - np.stack(sent[arrived - delay : arrived])).max())
        for chunk, arrived in zip(policy.chunks[1:], stats.switch_ticks[1:], strict=False)
    )


def test_rtc_keeps_the_new_chunk_on_the_executed_prefix_on_a_real_pi0(checkpoint: Path) -> None:
    # The boundary jump |a[T'] − a[T' − 1]| is no fair test on a π0 trained one step: its chunks jump
    # as much inside as between them. What RTC guarantees is this: the steps that executed from the
    # old chunk while the new one was computed are the new chunk's first steps too.
    guided, unguided = (frozen_prefix_deviation(checkpoint, s) for s in ("rtc", "naive"))
    assert guided < 0.1 * unguided, (guided, unguided)


def test_the_autonomy_bench_runs_every_strategy(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = bench_autonomy(
        AutonomyBenchSettings(checkpoint, delay_ticks=3, ticks=30, execute=EXECUTE, device="cpu")
    )
    runs = {run.strategy: run for run in report.runs}
    assert list(runs) == ["rtc", "sync", "naive", "ensemble"]
    assert runs["rtc"].stats.starved_ticks == runs["naive"].stats.starved_ticks == 0
    assert runs["sync"].stats.waiting_ticks > 0 and runs["ensemble"].stats.chunks > runs["rtc"].stats.chunks
    assert all(run.chunk.median_s > 0 and run.max_accel >= run.switch_accel > 0 for run in report.runs)
    flags = ["--checkpoint", str(checkpoint), "--device", "cpu", "--execute"]
    assert main(["bench", "autonomy", *flags, str(EXECUTE), "--ticks", "12", "--delay-ticks", "1"]) == 0
    assert "ensemble" in capsys.readouterr().out
    assert main(["bench", "autonomy", *flags, str(HORIZON + 1)]) == 2
    assert "exceeds the policy's horizon" in capsys.readouterr().err
