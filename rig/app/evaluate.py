"""Evaluation on the twin: N seeded autonomous episodes, the success rate with a 95 % interval.

Per episode: the scene is reset with the episode's seed, the followers return (through teleop, with
the twin's leaders held at the demonstrations' start pose) to where the recorded demonstrations
began, then the policy drives for the episode time or until the task is done. Every episode is
recorded into the store as an ordinary episode tagged `eval` (training skips those), with the twin's
verdict as its outcome.

What makes it fast and repeatable:
- The twin renders only the cameras the policy reads, at the size its crop needs (`policy_cameras`),
  and at `camera_hz` (10 Hz by default): rendering is ~15 ms a frame on a CPU whatever the size,
  and a policy asking every 25 ticks looks at one frame in five anyway. `full_video` renders and
  records every camera of the profile as recording does, for videos to watch.
- Inference runs in the loop's tick with a fixed simulated latency (`delay_ticks`): the result does
  not depend on how fast or how loaded the machine is, only on the policy, the seeds and the settings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hardware.profile import Profile
from rig.app.policy import Scheduling

if TYPE_CHECKING:
    from policy.interface import Policy, PolicyInfo
    from recorder.store import Store

SETTLE_S = 0.5  # the new scene stands this long before the policy starts
EVAL_STORE = "eval-store"  # inside a run folder: the episodes of its evaluations while training


@dataclass(frozen=True)
class EvalSettings:
    episodes: int = 10
    seed: int = 0  # episode k plays the scene of seed + k
    episode_s: float = 10.0  # simulated seconds per episode, at most
    prompt: str | None = None  # default: the first task the policy was trained on
    scheduling: Scheduling = field(default_factory=Scheduling)
    delay_ticks: int = 5  # simulated inference latency: 100 ms at 50 Hz, pi0-small's on a 2-core CPU
    camera_hz: float = 10.0  # how often the twin renders the policy's cameras
    full_video: bool = False  # render and record every camera of the profile at its size and rate

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {self.episodes}")
        if self.episode_s <= 0 or self.camera_hz <= 0:
            raise ValueError("the episode time and the camera rate must be positive")
        if self.delay_ticks < 0:
            raise ValueError(f"delay_ticks cannot be negative, got {self.delay_ticks}")


@dataclass(frozen=True)
class EpisodeOutcome:
    seed: int
    success: bool
    reward: int
    episode_id: int
    chunks: int
    events: tuple[str, ...]


@dataclass(frozen=True)
class EvalReport:
    task: str
    prompt: str
    outcomes: tuple[EpisodeOutcome, ...]
    wall_s: float

    @property
    def successes(self) -> int:
        return sum(o.success for o in self.outcomes)


def policy_cameras(profile: Profile, info: PolicyInfo, camera_hz: float) -> Profile:
    """The twin's profile with only the cameras the policy reads, each rendered just large enough for
    the region of it the policy sees, at `camera_hz`."""
    from policy.transform import FULL_FRAME, CameraView

    crops = info.crops or (FULL_FRAME,) * len(info.cameras)
    sizes: dict[str, tuple[int, int]] = {}  # per camera, the largest any of its views needs
    for name, crop in zip(info.cameras, crops, strict=True):
        settings = profile.cameras.get(name)
        if settings is None:
            raise ValueError(
                f"the policy reads camera {name!r}, which profile {profile.name} does not have "
                f"(it has {', '.join(profile.cameras)})"
            )
        size = (settings.height, settings.width)
        if info.image_size:
            size = CameraView(name, crop).render_size(settings.height, settings.width, info.image_size)
        largest = sizes.get(name, (0, 0))
        sizes[name] = (max(size[0], largest[0]), max(size[1], largest[1]))
    cameras = {
        name: dataclasses.replace(profile.cameras[name], height=height, width=width).at_most_hz(camera_hz)
        for name, (height, width) in sizes.items()
    }
    return dataclasses.replace(profile, cameras=cameras)


def evaluate(
    policy: Policy,
    info: PolicyInfo,
    profile: Profile,
    store: Store,
    settings: EvalSettings,
    say: Callable[[str], None] = print,
) -> EvalReport:
    """Run the episodes on the twin of `profile` and record each into `store`."""
    from hardware.devices import open_devices
    from policy.scheduler import TickDelayExecutor
    from rig.app.autonomy import AutonomySession, schedule, start_row
    from rig.modes import RAMPS
    from rig.operator import Demonstration, ScriptedOperator
    from rig.teleop import load_calibrations

    twin_spec = profile.twin
    if twin_spec is None:
        raise ValueError(f"profile {profile.name} is real hardware; evaluation needs a twin profile")
    prompt = settings.prompt or (info.tasks[0] if info.tasks else twin_spec.task.replace("_", " "))
    outcomes: list[EpisodeOutcome] = []
    started = time.monotonic()
    rendered = profile if settings.full_video else policy_cameras(profile, info, settings.camera_hz)
    with open_devices(rendered, lockstep=True) as devices:
        assert devices.twin is not None
        world = devices.twin.world
        session = AutonomySession(devices, load_calibrations(devices), store)
        operator = ScriptedOperator(devices.twin)
        loop = session.loop
        loop.start()
        try:
            for episode in range(settings.episodes):
                seed = settings.seed + episode
                start = start_row(devices)
                operator.start(Demonstration(world.task, np.vstack([start, start]), loop.dt))
                session.teleop(RAMPS.eval_reset_s)
                session.wait(RAMPS.eval_reset_s)
                world.scatter_objects(seed)  # the arms are home: the episode's scene
                # As in a recording, the scene is set before the episode starts: the policy's first
                # picture must show it, not the last episode's (a camera at 10 Hz renders every 0.1 s).
                session.wait(max(SETTLE_S, 2.0 / settings.camera_hz))
                session.reward.reset()
                executor = TickDelayExecutor(settings.delay_ticks)
                scheduler = schedule(policy, prompt, settings.scheduling, loop, executor)
                assert session.recorder is not None
                session.recorder.begin(prompt, tags=("eval",))
                mode = session.engage(scheduler, ramp_s=RAMPS.eval_autonomy_s)
                session.wait(
                    settings.episode_s, until=lambda m=mode: session.reward.success or loop.mode is not m
                )
                scheduler.close()
                success = session.reward.success
                summary = session.recorder.end(
                    "success" if success else "failure", twin_reward=session.reward.best
                )
                stats = scheduler.stats
                outcome = EpisodeOutcome(
                    seed, success, session.reward.best, summary.episode_id, stats.chunks, tuple(stats.events)
                )
                outcomes.append(outcome)
                say(
                    f"episode {episode + 1}/{settings.episodes} (seed {seed}): "
                    f"{'success' if success else 'failure'}, reward {outcome.reward}/{world.max_reward}, "
                    f"chunks {outcome.chunks}; stored as episode {outcome.episode_id}"
                )
                for event in outcome.events[-3:]:
                    say(f"  {event}")
        finally:
            operator.stop()
            loop.stop()
    return EvalReport(twin_spec.task, prompt, tuple(outcomes), time.monotonic() - started)


def log_result(run: Path, step: int, report: EvalReport, settings: EvalSettings) -> Path | None:
    """Append the report to the run's `eval.csv` and redraw its success curve; returns the curve."""
    from policy.progress import EvalResult, append_eval, plot_success, wilson_interval

    low, high = wilson_interval(report.successes, settings.episodes)
    append_eval(
        run,
        EvalResult(
            step, report.task, settings.episodes, report.successes, low, high, settings.seed,
            settings.scheduling.strategy, report.wall_s,
        ),
    )  # fmt: skip
    return plot_success(run)


def evaluate_checkpoints(
    profile: Profile, settings: EvalSettings, every: int, say: Callable[[str], None] = print
) -> Callable[[Path, int], None]:
    """A training hook: every `every` steps, evaluate the new checkpoint on the twin (episodes go to
    `<run>/eval-store`), log it to the run's success curve, and say the rate in one line. An
    evaluation that fails says why in one line and training goes on: the checkpoint is saved, and
    a crash here once ended a 4000-step run at step 2000."""
    from policy.checkpoint import run_of
    from policy.infer import LocalPolicy
    from recorder.store import Store

    def hook(checkpoint: Path, step: int) -> None:
        run = run_of(checkpoint)
        if step % every or run is None:
            return
        try:
            policy = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=settings.seed)
            with Store(run / EVAL_STORE) as store:
                report = evaluate(policy, policy.info(), profile, store, settings, say=lambda _: None)
        except Exception as error:  # any failure here must leave training running
            say(
                f"eval at step {step} failed ({type(error).__name__}: {error}); training goes on; "
                f"`rig eval --checkpoint {checkpoint}` tries it again"
            )
            return
        curve = log_result(run, step, report, settings)
        rate = f"{report.successes}/{settings.episodes}"
        say(f"eval at step {step}: {rate} successful in {report.wall_s:.0f} s; curve {curve}")

    return hook
