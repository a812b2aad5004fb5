"""`rig bench autonomy`: the chunk strategies side by side on a real π0, under one inference delay.

Each strategy drives an `ActionScheduler` tick by tick through a `TickDelayExecutor`, so every one
sees the same delay in ticks whatever this machine's speed; the wall time of each chunk is measured
as well, to tell what delay a live run here would see. There is no physics: the observed state is
the last action sent and every camera shows one fixed frame. Smoothness is the largest joint
acceleration |a[t+1] − 2a[t] + a[t−1]|·rate² from the first chunk on, overall and at the ticks next to
a switch to a newer chunk: where naive chunking jerks and real-time chunking should not.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from policy.bench import Timing
from policy.infer import LocalPolicy
from policy.interface import PolicyObservation
from policy.scheduler import (
    STRATEGIES,
    ActionScheduler,
    SchedulerConfig,
    SchedulerStats,
    Strategy,
    TickDelayExecutor,
)
from recorder.bench import rendered_like_frames
from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.store import Store
from rig.step import STATE_DIM, CameraSample, Observation, Step

RATE_HZ = 50.0
TASK = "transfer the cube"
DEFAULT_HORIZON = 50  # π0's: the default checkpoint's chunks are as long as a real one's
EVENTS_SHOWN = 3  # per strategy; a delay beyond horizon − execute starves at every chunk
FRAME_SIZE = (48, 64)  # (h, w) of the synthetic store's frames and the bench's fixed frame


@dataclass(frozen=True)
class AutonomyBenchSettings:
    checkpoint: Path | None = None  # None: a pi0-tiny trained one step on a synthetic store
    delay_ticks: int = 10
    ticks: int = 500
    execute: int = 25
    strategies: tuple[Strategy, ...] = STRATEGIES
    device: str | None = None  # None: CUDA when there is one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay_ticks < 0 or self.ticks < 3 or self.execute < 1:
            raise ValueError("delay-ticks cannot be negative, ticks must be at least 3, execute at least 1")


@dataclass(frozen=True)
class StrategyRun:
    strategy: Strategy
    stats: SchedulerStats
    chunk: Timing  # wall time of one policy call
    max_accel: float  # rad/s², from the first chunk's first action on
    switch_accel: float  # rad/s², at the ticks either side of a switch to a newer chunk (0: none)


@dataclass(frozen=True)
class AutonomyBenchReport:
    settings: AutonomyBenchSettings
    source: str  # where the checkpoint came from, in words
    config: str
    horizon: int
    device: str
    runs: tuple[StrategyRun, ...]

    def __str__(self) -> str:
        s = self.settings
        fits = s.delay_ticks <= self.horizon - s.execute
        lines = [
            f"autonomy bench: {self.config} (horizon {self.horizon}) on {self.device}; {self.source}",
            f"{s.ticks} ticks at {RATE_HZ:.0f} Hz, execute {s.execute}, simulated inference delay "
            f"{s.delay_ticks} ticks ({1e3 * s.delay_ticks / RATE_HZ:.0f} ms) for every strategy; "
            "state = the last action, a fixed frame per camera",
            f"{'strategy':<9}{'chunks':>7}{'wall/chunk median':>19}{'p99':>11}{'delay':>7}{'startup':>9}"
            f"{'starved':>9}{'waiting':>9}{'max accel':>12}{'at switches':>13}",
        ]
        for run in self.runs:
            st = run.stats
            lines.append(
                f"{run.strategy:<9}{st.chunks:>7}{_ms(run.chunk.median_s):>19}{_ms(run.chunk.p99_s):>11}"
                f"{s.delay_ticks:>7}{st.startup_ticks:>9}{st.starved_ticks:>9}{st.waiting_ticks:>9}"
                f"{run.max_accel:>12.0f}{run.switch_accel:>13.0f}"
            )
            lines += [f"  {run.strategy}: {event}" for event in st.events[:EVENTS_SHOWN]]
            if len(st.events) > EVENTS_SHOWN:
                lines.append(
                    f"  {run.strategy}: … {len(st.events) - EVENTS_SHOWN} more; the last: {st.events[-1]}"
                )
        lines.append(
            "accelerations in rad/s² (|a[t+1] − 2a[t] + a[t−1]|·rate², the largest over joints and ticks); "
            f"rtc and naive starve only when the delay exceeds horizon − execute "
            f"({s.delay_ticks} {'≤' if fits else '>'} {self.horizon - s.execute})"
        )
        return "\n".join(lines)


def bench_autonomy(
    settings: AutonomyBenchSettings, say: Callable[[str], None] = print
) -> AutonomyBenchReport:
    with _checkpoint(settings, say) as (checkpoint, source):
        base = LocalPolicy.from_checkpoint(checkpoint, settings.device, seed=settings.seed)
        info = base.info()
        if settings.execute > info.action_horizon:
            raise ValueError(f"execute {settings.execute} exceeds the policy's horizon {info.action_horizon}")
        frames = dict.fromkeys(info.cameras, rendered_like_frames(1, *FRAME_SIZE)[0])
        start = base.meta.normalizer.state.mean.astype(np.float64)
        base.infer(PolicyObservation(start, frames, TASK))  # warm-up: first-call costs are not a chunk's
        runs = []
        for strategy in settings.strategies:
            # The same weights, and the same noise from the same seed, for every strategy.
            policy = LocalPolicy(base.model, base.meta, base.tokenizer, base.beta, seed=settings.seed)
            runs.append(_run(policy, strategy, settings, start, frames))
        device = str(base.device)
        if base.device.type == "cuda":
            device += f" ({torch.cuda.get_device_name(base.device)})"
        return AutonomyBenchReport(settings, source, info.config, info.action_horizon, device, tuple(runs))


def _run(
    policy: LocalPolicy,
    strategy: Strategy,
    settings: AutonomyBenchSettings,
    start: np.ndarray,
    frames: dict[str, np.ndarray],
) -> StrategyRun:
    horizon = policy.info().action_horizon
    patience = settings.delay_ticks + horizon  # simulated delays are never lost replies
    config = SchedulerConfig(
        strategy=strategy,
        execute=settings.execute,
        reply_timeout_ticks=patience,
        startup_timeout_ticks=patience,
    )
    cameras = MappingProxyType({c: CameraSample(f, 0.0, 0, 0.0) for c, f in frames.items()})
    zeros = np.zeros(STATE_DIM)
    command, sent = start, []
    with ActionScheduler(policy, TASK, config, TickDelayExecutor(settings.delay_ticks)) as scheduler:
        for tick in range(settings.ticks):
            obs = Observation(tick, tick / RATE_HZ, command, zeros, zeros, None, command, cameras)
            action = scheduler.next_action(obs)
            if action is None:  # the policy is lost: its event says why
                break
            sent.append(command := np.asarray(action, dtype=np.float64))
    stats = scheduler.stats
    first = stats.switch_ticks[0] if stats.switch_ticks else len(sent)
    accel = _acceleration(np.array(sent[first:]).reshape(-1, STATE_DIM))
    near = [t - first + k for t in stats.switch_ticks[1:] for k in (-2, -1)]  # accel[i] is centred at i + 1
    return StrategyRun(
        strategy,
        stats,
        Timing.of(stats.delays_s or [math.nan]),
        float(accel.max(initial=0.0)),
        float(accel[[i for i in near if 0 <= i < len(accel)]].max(initial=0.0)),
    )


def _acceleration(actions: np.ndarray) -> np.ndarray:
    """(T − 2,) the largest |second difference| over joints per tick, in units per s²."""
    return np.abs(np.diff(actions, n=2, axis=0)).max(axis=1, initial=0.0) * RATE_HZ**2


@contextmanager
def _checkpoint(settings: AutonomyBenchSettings, say: Callable[[str], None]) -> Iterator[tuple[Path, str]]:
    if settings.checkpoint is not None:
        yield settings.checkpoint, f"checkpoint {settings.checkpoint}"
        return
    from policy.train import TrainSettings, train

    with tempfile.TemporaryDirectory(prefix="rig-bench-autonomy-") as folder:
        root = Path(folder)
        say(f"no --checkpoint: training pi0-tiny one step on a synthetic store in {root}")
        store = _synthetic_store(root / "store", ("cam_high", "cam_left_wrist", "cam_right_wrist"))
        result = train(
            TrainSettings(
                store=store,
                out=root / "run",
                config="pi0-tiny",
                steps=1,
                batch_size=4,
                workers=0,
                action_horizon=DEFAULT_HORIZON,
                seed=settings.seed,
                device=settings.device,
            ),
            say=lambda _: None,
        )
        yield result.checkpoint, "checkpoint: pi0-tiny trained 1 step on a synthetic store in a temp dir"


def _synthetic_store(root: Path, cameras: Sequence[str], episodes: int = 2, steps: int = 100) -> Path:
    """Slow sinusoids for the joints and the rendered scene for every camera: enough data for a
    training step's statistics and batches, written through the recorder as the rig writes it."""
    height, width = FRAME_SIZE
    frames = rendered_like_frames(25, height, width)
    joints, zeros = np.arange(STATE_DIM), np.zeros(STATE_DIM, np.float32)
    with Store(root) as store:
        session = store.catalogue.start_session(
            profile="bench", profile_snapshot="", calibration={}, rig_version="bench"
        )
        formats = [CameraFormat(c, width, height) for c in cameras]
        recorder = EpisodeRecorder(store, session, formats, RATE_HZ)
        for episode in range(episodes):
            ticks = np.arange(episode * steps, (episode + 1) * steps + 1)[:, None]
            qpos = (0.4 * np.sin(0.03 * ticks * (1 + joints / STATE_DIM) + joints)).astype(np.float32)
            recorder.begin(TASK)
            for index in range(steps):
                images = {
                    c: CameraSample(frames[index % len(frames)], index * 20.0, index, 0.0) for c in cameras
                }
                # The action is where the arms are at the next step.
                step = Step(
                    index, index / RATE_HZ, qpos[index], zeros, zeros, qpos[index + 1], None, "teleop", images
                )
                recorder.on_step(step)
                time.sleep(0.002)  # lets the writer and encoders keep up, as at the rig's 50 Hz
            recorder.end("success")
    return root


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"
