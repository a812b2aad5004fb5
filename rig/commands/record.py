"""`rig record`: teleoperate and record episodes, headless.

Per episode: a reset period (the arms go back to the start, the scene is set up again), a
countdown, then recording until the episode time is up or the operator ends it. Commands typed
on the terminal (a letter, then Enter): e end the episode now, r re-record it (discard), s / f mark
it a success / failure, q stop after this episode. On the twin the scripted operator performs the
episodes, and each episode's outcome is the twin's reward.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from hardware.devices import Devices, open_devices
from hardware.profile import Profile, ProfileError, Task, load_profile
from recorder.recorder import CameraFormat, EpisodeRecorder, EpisodeSummary
from recorder.store import Store, StoreFullError
from rig import __version__
from rig.calibration import ArmCalibration
from rig.loop import ControlLoop, LoopConfig
from rig.modes import Teleop
from rig.teleop import ENGAGE_S, load_calibrations

BYTES_PER_PIXEL_ESTIMATE = 0.1  # H.264 of rendered or camera images, with margin; steps are negligible


DEFAULT_EPISODE_S = 10.0  # on hardware, when no episode time is given (on the twin: the demonstration's)


@dataclass(frozen=True)
class RecordPlan:
    task: str
    episodes: int
    episode_s: float | None  # None: the twin's demonstration length, or DEFAULT_EPISODE_S
    reset_s: float
    countdown_s: float = 3.0


def with_scene(profile: Profile, scene: Task | None, twin_required: bool = False) -> Profile:
    """The profile with the twin set up for `scene` (None leaves it as it is); a hardware profile is
    refused when a scene is asked for or the command only makes sense on the twin."""
    if profile.twin is None:
        if scene is None and not twin_required:
            return profile
        raise ProfileError(f"profile {profile.name} is real hardware; use a twin profile such as aloha-sim")
    if scene is None:
        return profile
    return dataclasses.replace(profile, twin=dataclasses.replace(profile.twin, task=scene))


def bytes_needed(profile: Profile, plan: RecordPlan) -> int:
    """A generous estimate of the disk a recording session needs."""
    pixels_per_s = sum(c.width * c.height for c in profile.cameras.values()) * profile.rate_hz
    return int(
        pixels_per_s * BYTES_PER_PIXEL_ESTIMATE * (plan.episode_s or DEFAULT_EPISODE_S) * plan.episodes
    )


class Keys:
    """Operator commands from the terminal, one letter per line, read without blocking the flow."""

    def __init__(self, stream: TextIO | None) -> None:
        self._commands: queue.Queue[str] = queue.Queue()
        if stream is not None and stream.isatty():
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._commands.put(line.strip().lower()[:1])

    def poll(self) -> str | None:
        try:
            return self._commands.get_nowait()
        except queue.Empty:
            return None


class Session:
    """One `rig record` run: the loop, the recorder and, on the twin, the scripted operator."""

    def __init__(
        self,
        devices: Devices,
        store: Store,
        calibrations: dict[str, ArmCalibration],
    ) -> None:
        self.devices = devices
        self.profile = devices.profile
        self.loop = ControlLoop(devices, calibrations, LoopConfig())
        session_id = store.catalogue.start_session(
            profile=self.profile.name,
            profile_snapshot=Path(self.profile.source).read_text() if self.profile.source else "",
            calibration={name: json.loads(c.to_json()) for name, c in calibrations.items()},
            rig_version=__version__,
        )
        cameras = [CameraFormat(name, c.width, c.height) for name, c in self.profile.cameras.items()]
        self.recorder = EpisodeRecorder(store, session_id, cameras, self.profile.rate_hz)
        self.loop.subscribe(self.recorder.on_step)
        self.operator = None
        if devices.twin is not None:
            from rig.operator import ScriptedOperator

            self.operator = ScriptedOperator(devices.twin)

    def wait(self, seconds: float, keys: Keys | None = None) -> str | None:
        """Let `seconds` pass on the rig clock; returns an end command typed meanwhile (e, r, q)."""
        step = self.loop.wait_for_step()
        end = step.t + seconds
        verdict = None
        while step.t < end:
            step = self.loop.wait_for_step(step.index, timeout=30)
            key = keys.poll() if keys else None
            if key in ("s", "f"):
                verdict = key
            elif key in ("e", "r", "q"):
                return key
            if self.recorder.error:
                return "q"
        return verdict

    def demonstrate(self, start_in: float) -> float:
        """On the twin: new object placement, and a demonstration starting `start_in` from now,
        preceded by the leaders' way back to the start. Returns the demonstration's duration."""
        from rig.operator import Demonstration, plan_demonstration

        assert self.operator is not None and self.devices.twin is not None
        world = self.devices.twin.world
        world.scatter_objects()
        demo = plan_demonstration(world.task, world.object_poses())
        previous = self.operator.demonstration
        now = self.loop.wait_for_step().t
        ticks = max(1, round(start_in / demo.dt))
        origin = previous.leader[-1] if previous is not None else demo.leader[0]
        way_back = np.linspace(origin, demo.leader[0], ticks)
        self.operator.start(Demonstration(demo.task, np.vstack([way_back, demo.leader]), demo.dt), t0=now)
        return demo.duration


def run_record(
    profile_name: str,
    plan: RecordPlan,
    store_dir: Path,
    calibration_dir: Path | None,
    out: TextIO,
    scene: Task | None = None,
) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    profile = with_scene(load_profile(profile_name), scene)
    store = Store(store_dir)
    for episode_id in store.recovered:
        say(f"episode {episode_id} was interrupted by a crash; what was written is kept, marked interrupted")
    try:
        store.check_free_space(bytes_needed(profile, plan))
    except StoreFullError as error:
        print(f"rig record: {error}", file=sys.stderr)
        return 1
    keys = Keys(sys.stdin)
    summaries: list[EpisodeSummary] = []
    with open_devices(profile) as devices:
        session = Session(devices, store, load_calibrations(devices, calibration_dir))
        loop = session.loop
        loop.start()
        loop.set_mode(Teleop(), ramp_s=ENGAGE_S)
        session.wait(ENGAGE_S)
        say("commands: e end the episode, r re-record it, s/f mark success/failure, q stop (then Enter)")
        try:
            while len(summaries) < plan.episodes:
                episode_s = plan.episode_s or DEFAULT_EPISODE_S
                if session.operator is not None:
                    demonstration_s = session.demonstrate(start_in=plan.reset_s + plan.countdown_s)
                    episode_s = plan.episode_s or demonstration_s
                say(f"reset the scene: {plan.reset_s:.0f} s")
                session.wait(plan.reset_s)
                say(f"episode {len(summaries) + 1}/{plan.episodes} starts in {plan.countdown_s:g} s")
                session.wait(plan.countdown_s)
                session.recorder.begin(plan.task)
                say(f"recording {episode_s:.0f} s: {plan.task}")
                command = session.wait(episode_s, keys)
                if command == "r":
                    session.recorder.discard()
                    say("discarded; recording this episode again")
                    continue
                summaries.append(_finish(session, command))
                say(summaries[-1].describe())
                if command == "q" or session.recorder.error:
                    break
        finally:
            loop.stop()
    if session.recorder.error:
        print(f"rig record: {session.recorder.error}", file=sys.stderr)
        return 1
    successes = sum(s.outcome == "success" for s in summaries)
    say(f"recorded {len(summaries)} episode(s) into {store.root}; {successes} marked successful")
    return 0


def _finish(session: Session, command: str | None) -> EpisodeSummary:
    return end_episode(session, {"s": "success", "f": "failure"}.get(command or ""))


def end_episode(session: Session, outcome: str | None) -> EpisodeSummary:
    """End the episode being recorded: the operator's verdict when given, else on the twin its reward."""
    operator = session.operator
    if outcome is not None:
        return session.recorder.end(outcome)
    if operator is not None:
        verdict = "success" if operator.success else "failure"
        return session.recorder.end(verdict, twin_reward=operator.max_reward)
    return session.recorder.end()
