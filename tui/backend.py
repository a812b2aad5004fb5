"""`RigBackend`: the app's one way to the rig, on the application layer (rig.app) that `rig record`
and `rig run` use too.

The loop runs on its own thread; a listener keeps the latest step and a few recent counters (O(1)
per tick), and `state()` turns them into a `RigState` on the caller's thread. Slow work happens on
the backend's threads: a watcher that ends episodes (the twin's demonstration is over, the disk is
full), the policy's loading, a replay. Commands only check, switch a mode, and return.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hardware.devices import Devices, open_devices
from hardware.profile import Profile, load_profile
from recorder.recorder import EpisodeSummary
from recorder.store import Store
from rig.app.autonomy import RewardWatch, schedule
from rig.app.episodes import episode_actions, replay_actions
from rig.app.policy import PolicySpec, open_policy
from rig.app.record import RecordingSession, end_episode
from rig.app.warmup import needed_s, warm_up
from rig.event_log import EventLog
from rig.loop import ControlLoop
from rig.modes import RAMPS, Autonomous, Hold, InterventionConfig, Mode, Teleop
from rig.step import SIDES, CameraSample, Step
from rig.teleop import load_calibrations
from tui.state import AutonomyStatus, CameraStatus, CommandRefused, RecordingStatus, RigState

if TYPE_CHECKING:
    from policy.scheduler import ActionScheduler

RATE_WINDOW = 50  # ticks of step times behind rate_hz (a second at 50 Hz)
PERIOD_WINDOW = 500  # ticks behind the period error's p99: recent, not the whole session
CAMERA_STALE_S = 1.0  # a camera with no new frame for this long (wall clock) is shown as lost
STORE_REFRESH_S = 2.0  # how often the store's size is summed again
PREVIEW_SHAPE = (48, 64)
EVENTS_KEPT = 30
WATCH_S = 0.1  # the watcher's period


@dataclass(frozen=True)
class _Recording:
    episode_id: int
    task: str
    started_t: float  # rig clock
    planned_s: float | None
    ends_with_demonstration: bool  # the twin: ends on its own when the scripted operator is done


@dataclass(frozen=True, eq=False)
class _Autonomy:
    """One autonomy run; replaced (never mutated) as it goes from loading to engaged."""

    label: str
    strategy: str
    scheduler: ActionScheduler | None = None
    mode: Autonomous | None = None
    engaged: bool = False  # the loop has switched to `mode` once
    error: str | None = None  # why it never engaged (a bad checkpoint, no server, no task)


@dataclass(frozen=True)
class _StoreFigures:
    at: float  # monotonic time of the count
    size: int
    free: int
    episodes: int


@dataclass
class _Camera:
    """Per-camera counters kept by the loop listener."""

    frame_number: int = -1
    new_frames: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=200))
    last_new_wall: float = 0.0


class _Recent:
    """What the loop listener keeps: the latest step and short windows, under one small lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW)
        self.period_errors: collections.deque[float] = collections.deque(maxlen=PERIOD_WINDOW)
        self.cameras: dict[str, _Camera] = {}
        self.events = EventLog(kept=EVENTS_KEPT)  # a repeated event counts on its line
        self.first_t: float | None = None

    def on_step(self, step: Step) -> None:
        wall = time.monotonic()
        with self.lock:
            if self.first_t is None:
                self.first_t = step.t
            self.times.append(step.t)
            self.period_errors.append(step.period_error_s)
            for name, sample in step.cameras.items():
                camera = self.cameras.setdefault(name, _Camera())
                if sample.frame_number != camera.frame_number:
                    camera.frame_number = sample.frame_number
                    camera.new_frames.append(step.t)
                    camera.last_new_wall = wall
            for event in step.events:
                self.events.add(step.t, event)

    def say(self, t: float, message: str) -> None:
        with self.lock:
            self.events.add(t, message)

    def snapshot(self) -> tuple[list[float], list[float], dict[str, tuple[list[float], float]], list[str]]:
        with self.lock:
            cameras = {name: (list(c.new_frames), c.last_new_wall) for name, c in self.cameras.items()}
            return list(self.times), list(self.period_errors), cameras, self.events.describe()


class RigBackend:
    """The rig behind the TUI: `start()` opens the devices and engages teleop; `close()` parks."""

    def __init__(
        self,
        profile_name: str = "aloha-sim",
        store_dir: Path = Path("store"),
        calibration_dir: Path | None = None,
        profile: Profile | None = None,
    ) -> None:
        self.profile = profile or load_profile(profile_name)
        self.store_dir = Path(store_dir)
        self.calibration_dir = calibration_dir
        self.joint_names = _joint_names(self.profile)
        self._lock = threading.RLock()  # commands and the watcher, one at a time
        self._recent = _Recent()
        self._devices: Devices | None = None
        self._store: Store | None = None
        self._session: RecordingSession | None = None
        self._reward: RewardWatch | None = None
        self._recording: _Recording | None = None
        self._autonomy: _Autonomy | None = None
        self._replay: threading.Thread | None = None
        self._last: EpisodeSummary | None = None
        self._store_figures: _StoreFigures | None = None
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> RigBackend:
        if self._session is not None:
            return self
        store = Store(self.store_dir)
        try:
            devices = open_devices(self.profile)
        except BaseException:
            store.close()
            raise
        try:
            session = RecordingSession(devices, store, load_calibrations(devices, self.calibration_dir))
            self._reward = RewardWatch(devices)
            session.loop.subscribe(self._reward.on_step)
            session.loop.subscribe(self._recent.on_step)
            session.loop.start()
        except BaseException:
            devices.close()
            store.close()
            raise
        self._devices, self._store, self._session = devices, store, session
        for episode_id in store.recovered:
            self._say(f"episode {episode_id} was interrupted by a crash; kept, marked interrupted")
        session.loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)
        self._watcher = threading.Thread(target=self._watch, name="tui-backend-watch", daemon=True)
        self._watcher.start()
        return self

    def close(self) -> None:
        """End an episode being recorded (kept), let go of the policy, park the arms, close all."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(5)
        with self._lock:
            session, run = self._session, self._autonomy
            if session is None:
                return
            self._autonomy = None
            try:
                if self._recording is not None:
                    self._end_recording(None)
            finally:
                session.loop.stop()
                if run is not None and run.scheduler is not None:
                    run.scheduler.close()
                if self._replay is not None:
                    self._replay.join(5)
                assert self._devices is not None and self._store is not None
                self._devices.close()
                self._store.close()
                self._session = None

    def __enter__(self) -> RigBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def loop(self) -> ControlLoop:
        """The running loop (for tests and tools that listen to steps; the app uses `state()`)."""
        return self._running().loop

    @property
    def devices(self) -> Devices:
        """What was opened: on the twin, its handle (tests unplug servos through it)."""
        if self._devices is None:
            raise CommandRefused("the rig is not started")
        return self._devices

    # ---- the snapshot ----------------------------------------------------------------------
    def state(self) -> RigState:
        session = self._running()
        loop = session.loop
        step = loop.latest
        times, errors, camera_counts, events = self._recent.snapshot()
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        p99 = max(0.0, float(np.percentile(errors, 99)) * 1e3) if errors else 0.0
        now_t = step.t if step is not None else 0.0
        bus_errors = tuple(f"{name}: {why}" for name, why in loop.faults.items())
        if loop.error is not None:
            bus_errors += (f"control loop stopped: {loop.error}",)
        figures = self._store_now()
        lower, upper = loop.safety.bounds
        twin = self._devices is not None and self._devices.twin is not None
        return RigState(
            profile=self.profile.name,
            twin=twin,
            mode=step.mode if step is not None else "idle",
            estopped=loop.estopped,
            rate_hz=rate,
            period_error_p99_ms=p99,
            overruns=loop.stats.overruns,
            bus_errors=bus_errors,
            joint_names=self.joint_names,
            qpos=None if step is None else step.qpos,
            leader=None if step is None else step.leader,
            lower=lower,
            upper=upper,
            cameras=self._cameras(step, camera_counts, now_t),
            store_path=str(self.store_dir),
            store_bytes=figures.size,
            free_bytes=figures.free,
            episodes_in_store=figures.episodes,
            recording=self._recording_status(now_t),
            autonomy=self._autonomy_status(),
            twin_reward=self._reward.best if twin and self._reward is not None else None,
            events=tuple(events),
        )

    def _cameras(
        self, step: Step | None, counts: dict[str, tuple[list[float], float]], now_t: float
    ) -> tuple[CameraStatus, ...]:
        samples = step.cameras if step is not None else {}
        first_t = self._recent.first_t if self._recent.first_t is not None else now_t
        drops = self._last.frames_dropped if self._last is not None and self._recording is None else {}
        statuses = []
        wall = time.monotonic()
        for name in self.profile.cameras:
            new_frames, last_new = counts.get(name, ([], 0.0))
            fps = sum(t > now_t - 1.0 for t in new_frames) / max(min(1.0, now_t - first_t), 1e-3)
            sample = samples.get(name)
            statuses.append(
                CameraStatus(
                    name=name,
                    fps=fps,
                    drops=int(drops.get(name, 0)),
                    ok=sample is not None and wall - last_new <= CAMERA_STALE_S,
                    preview=None if sample is None else _preview(sample),
                )
            )
        return tuple(statuses)

    def _recording_status(self, now_t: float) -> RecordingStatus | None:
        recording = self._recording
        if recording is None:
            return None
        elapsed = max(0.0, now_t - recording.started_t)
        return RecordingStatus(recording.episode_id, recording.task, elapsed, recording.planned_s)

    def _autonomy_status(self) -> AutonomyStatus | None:
        run = self._autonomy
        if run is None:
            return None
        stats = run.scheduler.stats if run.scheduler is not None else None
        return AutonomyStatus(
            policy=run.label,
            strategy=run.strategy,
            chunks=stats.chunks if stats else 0,
            latency_ms=stats.delays_s[-1] * 1e3 if stats and stats.delays_s else None,
            delay_ticks=stats.delays_ticks[-1] if stats and stats.delays_ticks else None,
            starved_ticks=stats.starved_ticks if stats else 0,
            intervention=run.mode.taken_over if run.mode is not None else (),
            lost=self._lost(run),
        )

    def _lost(self, run: _Autonomy) -> bool:
        """The policy failed, never loaded, or the loop left its mode by itself (watchdog, fault)."""
        if run.error is not None or (run.scheduler is not None and run.scheduler.failed):
            return True
        loop = self._running().loop
        return run.engaged and loop.mode is not run.mode and not loop.estopped

    def _store_now(self) -> _StoreFigures:
        figures = self._store_figures
        if figures is None or time.monotonic() - figures.at > STORE_REFRESH_S:
            store = self._store
            assert store is not None
            files = (path for path in store.root.rglob("*") if path.is_file())
            size = sum(path.stat().st_size for path in files)
            figures = _StoreFigures(
                time.monotonic(), size, store.free_bytes(), len(store.catalogue.episodes())
            )
            self._store_figures = figures
        return figures

    # ---- recording -------------------------------------------------------------------------
    def start_episode(self, task: str) -> None:
        with self._lock:
            session = self._running()
            self._refuse_if_busy("start an episode")
            if session.recorder.error:
                raise CommandRefused(session.recorder.error)
            step = session.loop.wait_for_step()
            if step.mode != "teleop":
                session.loop.set_mode(Teleop(), ramp_s=RAMPS.demonstration_start_s)
            planned = None
            if session.operator is not None:
                start_s = RAMPS.demonstration_start_s  # the leaders' way back (recorded), the followers' ramp
                planned = start_s + session.demonstrate(start_in=start_s)
            episode_id = session.recorder.begin(task)
            started = session.loop.wait_for_step().t
            twin = session.operator is not None
            self._recording = _Recording(episode_id, task, started, planned, ends_with_demonstration=twin)
            self._say(f"recording episode {episode_id}: {task}")

    def stop_episode(self, outcome: str | None = None) -> None:
        with self._lock:
            if self._recording is None:
                raise CommandRefused("no episode is being recorded")
            self._end_recording(outcome)

    def rerecord(self) -> None:
        with self._lock:
            recording = self._recording
            if recording is None:
                raise CommandRefused("no episode is being recorded")
            self._recording = None
            self._running().recorder.discard()
            self._forget_store_figures()
            self._say(f"episode {recording.episode_id} discarded")

    def mark_last(self, outcome: str) -> None:
        with self._lock:
            if self._last is None:
                raise CommandRefused("no episode was recorded yet")
            try:
                self._running().recorder.store.catalogue.set_outcome(self._last.episode_id, outcome)
            except (KeyError, ValueError) as error:
                raise CommandRefused(f"cannot mark episode {self._last.episode_id}: {error}") from None
            self._last = dataclasses.replace(self._last, outcome=outcome)
            self._say(f"episode {self._last.episode_id} marked {outcome}")

    def _end_recording(self, outcome: str | None) -> None:
        try:
            summary = end_episode(self._running(), outcome)
        finally:
            self._recording = None  # after the catalogue has it: whoever polls then finds it there
        self._last = summary
        self._forget_store_figures()
        self._say(summary.describe())

    # ---- modes -----------------------------------------------------------------------------
    def teleop(self) -> None:
        with self._lock:
            loop = self._running().loop
            if loop.estopped:
                raise CommandRefused("the e-stop is on; release it first")
            if self._autonomy is not None:
                self.stop_autonomy()
                return
            loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)

    def estop(self) -> None:
        loop = self._running().loop
        loop.estop()  # first, before any lock: nothing may delay the hold
        self._say("e-stop: holding")

    def release_estop(self) -> None:
        with self._lock:
            loop = self._running().loop
            if not loop.estopped:
                raise CommandRefused("the e-stop is not on")
            run, self._autonomy = self._autonomy, None
            loop.release_estop()
            if run is not None:
                self._retire(run)
            self._say("e-stop released: idle, holding")

    def start_autonomy(
        self, checkpoint: str | None = None, endpoint: str | None = None, task: str = ""
    ) -> None:
        if (checkpoint is None) == (endpoint is None):
            raise CommandRefused("give a checkpoint or a policy server's endpoint (one of them)")
        with self._lock:
            self._running()
            self._refuse_if_busy("start autonomy")
            spec = PolicySpec(checkpoint=None if checkpoint is None else Path(checkpoint), endpoint=endpoint)
            run = _Autonomy(label=f"loading {spec.label}", strategy=spec.scheduling.strategy)
            self._autonomy = run
            threading.Thread(
                target=self._engage, args=(run, spec, task), name="tui-policy-load", daemon=True
            ).start()

    def stop_autonomy(self) -> None:
        with self._lock:
            loop = self._running().loop
            run, self._autonomy = self._autonomy, None
            if run is None:
                raise CommandRefused("autonomy is not running")
            if not loop.estopped:
                loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)
            self._retire(run)
            self._say("autonomy stopped: back to teleop")

    def take_over(self) -> None:
        self._engaged_mode().take_over()

    def hand_back(self) -> None:
        self._engaged_mode().hand_back()

    def _engage(self, run: _Autonomy, spec: PolicySpec, task: str) -> None:
        """The loading thread: open the policy (seconds), then hand it the arms unless cancelled."""
        try:
            policy = open_policy(spec)
            info = policy.info()
        except Exception as error:
            self._fail(run, f"the policy could not be opened: {error}")
            return
        prompt = task or (info.tasks[0] if info.tasks else "")
        if not prompt:
            self._fail(run, "the policy names no task it was trained on; give one")
            return
        execute = spec.scheduling.execute or max(1, info.action_horizon // 2)
        try:
            step = self._running().loop.wait_for_step()
            timing = warm_up(
                policy, step, prompt, needed_s(info.action_horizon, execute, self.profile.rate_hz)
            )
        except Exception as error:
            self._fail(run, f"the policy failed its first inference: {error}")
            return
        if not timing.fast_enough:
            self._fail(run, f"refused: {timing.describe()}; use a faster machine (`rig serve` on a GPU)")
            return
        label = spec.endpoint or f"{info.config} step {info.step} (local)"
        label += f", {timing.chunk_s:.2f} s a chunk"
        with self._lock:
            if self._autonomy is not run or self._closing.is_set():
                return  # stopped (or e-stopped and released) while loading
            loop = self._running().loop
            if loop.estopped:
                self._fail(run, "the e-stop went on while the policy loaded")
                return
            scheduler = schedule(policy, prompt, spec.scheduling, loop)
            config = InterventionConfig(rate_hz=self.profile.rate_hz)
            mode = Autonomous(scheduler, config)
            run = dataclasses.replace(run, label=label, scheduler=scheduler, mode=mode)
            self._autonomy = run
            loop.set_mode(mode, ramp_s=RAMPS.autonomy_s)
            self._say(f"autonomy: {label}, task {prompt!r}")
        try:
            switched = self._switched(mode)
        except (CommandRefused, RuntimeError, TimeoutError):  # closed, or the loop stopped meanwhile
            return
        if switched:
            with self._lock:
                if self._autonomy is run:
                    self._autonomy = dataclasses.replace(run, engaged=True)

    def _fail(self, run: _Autonomy, message: str) -> None:
        with self._lock:
            if self._autonomy is run:
                self._autonomy = dataclasses.replace(
                    run, label=run.label.removeprefix("loading "), error=message
                )
                self._say(f"autonomy: {message}")

    def _retire(self, run: _Autonomy) -> None:
        """Close a run's scheduler once the loop has left its mode (a closed one must not be asked)."""
        if run.scheduler is None:
            return
        if run.mode is not None:
            self._switched(run.mode, away=True)
        run.scheduler.close()

    def _switched(self, mode: Mode, away: bool = False, ticks: int = 25) -> bool:
        """Wait a few ticks for the loop to take up `mode` (or to leave it); whether it did."""
        loop = self._running().loop
        step = loop.wait_for_step()
        for _ in range(ticks):
            if (loop.mode is mode) != away:
                return True
            if not loop.running:
                return False
            step = loop.wait_for_step(step.index)
        return False

    def _engaged_mode(self) -> Autonomous:
        run = self._autonomy
        if run is None or run.mode is None:
            raise CommandRefused("the policy is not driving")
        return run.mode

    # ---- episodes --------------------------------------------------------------------------
    def replay(self, episode_id: int) -> None:
        with self._lock:
            session = self._running()
            self._refuse_if_busy("replay")
            try:
                actions = episode_actions(session.recorder.store, episode_id)
            except (KeyError, FileNotFoundError, ValueError) as error:
                raise CommandRefused(f"episode {episode_id} cannot be replayed: {error}") from None
            if not len(actions):
                raise CommandRefused(f"episode {episode_id} has no steps")
            self._replay = threading.Thread(
                target=self._play, args=(episode_id, actions), name="tui-replay", daemon=True
            )
            self._replay.start()

    def _play(self, episode_id: int, actions: np.ndarray) -> None:
        loop = self._running().loop
        self._say(f"replaying episode {episode_id}: {len(actions)} actions")
        try:
            step = replay_actions(loop, actions)
        except (RuntimeError, TimeoutError) as error:  # the loop stopped under it
            self._say(f"replay of episode {episode_id} stopped: {error}")
            return
        if step is None:
            self._say(f"replay of episode {episode_id} interrupted")
            return
        loop.set_mode(Hold(), ramp_s=0.0)
        self._say(f"replayed episode {episode_id}")

    def delete(self, episode_id: int) -> None:
        with self._lock:
            session = self._running()
            if self._recording is not None and self._recording.episode_id == episode_id:
                raise CommandRefused(f"episode {episode_id} is being recorded; stop or re-record it first")
            try:
                session.recorder.store.delete_episode(episode_id)
            except KeyError:
                raise CommandRefused(f"there is no episode {episode_id}") from None
            if self._last is not None and self._last.episode_id == episode_id:
                self._last = None
            self._forget_store_figures()
            self._say(f"deleted episode {episode_id}")

    # ---- helpers ---------------------------------------------------------------------------
    def _running(self) -> RecordingSession:
        session = self._session
        if session is None:
            raise CommandRefused("the rig is not started")
        return session

    def _refuse_if_busy(self, what: str) -> None:
        loop = self._running().loop
        if loop.estopped:
            raise CommandRefused(f"cannot {what}: the e-stop is on")
        if self._recording is not None:
            raise CommandRefused(f"cannot {what}: episode {self._recording.episode_id} is being recorded")
        if self._autonomy is not None:
            raise CommandRefused(f"cannot {what}: the policy is driving; stop autonomy first")
        if self._replay is not None and self._replay.is_alive():
            raise CommandRefused(f"cannot {what}: a replay is running")
        if loop.error is not None or not loop.running:
            raise CommandRefused(f"cannot {what}: the control loop stopped ({loop.error})")

    def _forget_store_figures(self) -> None:
        self._store_figures = None

    def _say(self, message: str) -> None:
        session = self._session
        step = session.loop.latest if session is not None else None
        self._recent.say(step.t if step is not None else 0.0, message)

    def _watch(self) -> None:
        """End episodes that are over: the twin's demonstration is done, the disk is full, no loop."""
        while not self._closing.wait(WATCH_S):
            with self._lock:
                session, recording = self._session, self._recording
                if session is None or recording is None:
                    continue
                operator = session.operator
                demonstrated = recording.ends_with_demonstration and operator is not None and operator.done
                if demonstrated or session.recorder.error or not session.loop.running:
                    self._end_recording(None)


def _joint_names(profile: Profile) -> tuple[str, ...]:
    """ "left.waist" … "right.gripper": the followers' joints in the 14-vector's order."""
    followers = {arm.side: arm for arm in profile.arms_with_role("follower").values()}
    return tuple(f"{side}.{joint}" for side in SIDES if side in followers for joint in followers[side].joints)


def _preview(sample: CameraSample) -> np.ndarray:
    """About PREVIEW_SHAPE of the frame by striding: a view costs nothing, the copy a few KB."""
    image = sample.image
    sy = max(1, image.shape[0] // PREVIEW_SHAPE[0])
    sx = max(1, image.shape[1] // PREVIEW_SHAPE[1])
    return np.ascontiguousarray(image[::sy, ::sx])
