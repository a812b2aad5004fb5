"""Recording as an operation: a session on the rig with a recorder and, on the twin, the scripted
operator; the episodes of a plan (reset, countdown, recording) on it; how an episode ends.

Per episode: a reset period (the arms go back to the start, the scene is set up again), a countdown,
then recording until the episode time is up or the operator ends it. A safety trip (a servo that
stopped answering, the watchdog) leaves the arms holding until a mode is chosen: the reset period
chooses teleop again, and says so, so no episode records an idle rig unnoticed; an episode that held
anyway is flagged (recorder/quality.py). With `successful_only` (the twin), an episode that failed or
was flagged is discarded and recorded again, a bounded number of times.

`rig record` and the terminal app's Record screen both run on `RecordingSession`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hardware.devices import Devices
from hardware.profile import Profile, ProfileError, Task
from recorder.recorder import EpisodeRecorder, EpisodeSummary
from recorder.store import Store
from rig.app.session import RigSession
from rig.calibration import ArmCalibration
from rig.episode_time import DEFAULT_EPISODE_S
from rig.modes import RAMPS, Teleop
from rig.step import Step

BYTES_PER_PIXEL_ESTIMATE = 0.1  # H.264 of rendered or camera images, with margin; steps are negligible
TRIP_EVENTS = ("fault:", "watchdog:", "overload:")  # the loop's events that leave the arms holding
VERDICTS = {"s": "success", "f": "failure"}  # the operator's commands that judge an episode


class OperatorCommands(Protocol):
    """Where the operator's one-letter commands come from (a terminal, a test): e end the episode,
    r re-record it, s / f mark it a success / failure, q stop after it."""

    def poll(self) -> str | None: ...


@dataclass(frozen=True)
class RecordPlan:
    task: str
    episodes: int
    episode_s: float | None  # None: the twin's demonstration length, or DEFAULT_EPISODE_S
    reset_s: float
    countdown_s: float = 3.0
    successful_only: bool = False  # on the twin: discard a failed or flagged episode, record it again
    retries: int = 3  # per episode, with successful_only


@dataclass
class RecordResult:
    """What a session kept, what it threw away and why, and why it stopped early if it did."""

    kept: list[EpisodeSummary] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)  # the reason for each discarded episode
    gave_up: str | None = None

    def describe(self, root: Path) -> str:
        successes = sum(s.outcome == "success" for s in self.kept)
        parts = [f"recorded {len(self.kept)} episode(s) into {root}; {successes} marked successful"]
        if flagged := sum(bool(s.flags) for s in self.kept):
            parts.append(f"{flagged} flagged (training leaves them out; see rig episodes)")
        if self.discarded:
            reasons = collections.Counter(self.discarded)
            counts = ", ".join(f"{n} {why}" for why, n in reasons.items())
            parts.append(f"{len(self.discarded)} discarded ({counts})")
        return "; ".join(parts)


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


def with_cameras(profile: Profile, names: Sequence[str] | None, hz: float | None = None) -> Profile:
    """The profile recording only the cameras `names` (None: all it has), each at most `hz` frames a
    second (None: its own rate); an unknown name is refused with the names there are. On the twin
    every frame is a render (~15 ms on a CPU): fewer cameras and frames record faster."""
    names = list(profile.cameras) if names is None else names
    unknown = [name for name in names if name not in profile.cameras]
    if unknown or not names:
        raise ProfileError(
            f"profile {profile.name} has no camera {', '.join(unknown) or '(none given)'}; "
            f"it has {', '.join(profile.cameras)}"
        )
    cameras = {name: profile.cameras[name] for name in names}
    if hz is not None:
        cameras = {name: camera.at_most_hz(hz) for name, camera in cameras.items()}
    return dataclasses.replace(profile, cameras=cameras)


def bytes_needed(profile: Profile, plan: RecordPlan) -> int:
    """A generous estimate of the disk a recording session needs."""
    pixels_per_s = sum(c.width * c.height for c in profile.cameras.values()) * profile.rate_hz
    return int(
        pixels_per_s * BYTES_PER_PIXEL_ESTIMATE * (plan.episode_s or DEFAULT_EPISODE_S) * plan.episodes
    )


class RecordingSession(RigSession):
    """The loop, the recorder and, on the twin, the scripted operator."""

    def __init__(self, devices: Devices, store: Store, calibrations: Mapping[str, ArmCalibration]) -> None:
        super().__init__(devices, calibrations, store)
        assert self.recorder is not None
        self.recorder: EpisodeRecorder = self.recorder
        self.last_trip: str | None = None  # the latest event that left the arms holding
        self.loop.subscribe(self._note_trip)
        self.operator = None
        if devices.twin is not None:
            from rig.operator import ScriptedOperator

            self.operator = ScriptedOperator(devices.twin)

    def _note_trip(self, step: Step) -> None:
        for event in step.events:
            if event.startswith(TRIP_EVENTS):
                self.last_trip = event

    def engage_teleop(self) -> str | None:
        """Teleop again (with the engage ramp) when the loop has left it: a safety trip holds the arms
        until a mode is chosen. Says what was done, or None when teleop was on (or the e-stop is)."""
        loop = self.loop
        mode = loop.mode.name
        if mode == "teleop" or loop.estopped:
            return None
        loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)
        why = f" after {self.last_trip}" if self.last_trip else ""
        self.last_trip = None
        faults = loop.faults
        waiting = f"; they hold until {', '.join(faults)} answers again" if faults else ""
        return f"teleop engaged again ({RAMPS.teleop_s:g} s ramp): the arms were {mode}{why}{waiting}"

    def wait_for_command(self, seconds: float, commands: OperatorCommands | None = None) -> str | None:
        """Let `seconds` pass on the rig clock; returns a command typed meanwhile: e, r or q at once,
        else the last verdict (s, f), else None."""
        typed: list[str] = []

        def ended(_: Step) -> bool:
            key = commands.poll() if commands else None
            if key in ("s", "f", "e", "r", "q"):
                typed.append(key)
            if self.recorder.error:
                typed.append("q")
            return bool(typed) and typed[-1] in ("e", "r", "q")

        self.loop.wait_seconds(seconds, until=ended)
        return typed[-1] if typed else None

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


def record_episodes(
    session: RecordingSession,
    plan: RecordPlan,
    say: Callable[[str], None],
    commands: OperatorCommands | None = None,
) -> RecordResult:
    """The episodes of `plan`, on a started loop: teleop, then per episode reset, countdown, recording."""
    loop = session.loop
    loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)
    session.wait(RAMPS.teleop_s)
    say("commands: e end the episode, r re-record it, s/f mark success/failure, q stop (then Enter)")
    result = RecordResult()
    retried = 0  # times the episode being recorded was discarded (successful_only)
    while len(result.kept) < plan.episodes:
        number = len(result.kept) + 1
        if engaged := session.engage_teleop():
            say(engaged)
        episode_s = plan.episode_s or DEFAULT_EPISODE_S
        if session.operator is not None:
            demonstration_s = session.demonstrate(start_in=plan.reset_s + plan.countdown_s)
            episode_s = plan.episode_s or demonstration_s
        say(f"reset the scene: {plan.reset_s:.0f} s")
        session.wait(plan.reset_s)
        say(f"episode {number}/{plan.episodes} starts in {plan.countdown_s:g} s")
        session.wait(plan.countdown_s)
        session.recorder.begin(plan.task)
        say(f"recording {episode_s:.0f} s: {plan.task}")
        command = session.wait_for_command(episode_s, commands)
        if command == "r":
            session.recorder.discard()
            say("discarded; recording this episode again")
            continue
        summary = end_episode(session, VERDICTS.get(command or ""))
        say(summary.describe())
        stop = command == "q" or session.recorder.error is not None
        rejected = _rejection(summary) if plan.successful_only else None
        if rejected is None:
            result.kept.append(summary)
            retried = 0
        else:
            session.recorder.store.delete_episode(summary.episode_id)
            result.discarded.append(rejected)
            if retried == plan.retries:
                result.gave_up = (
                    f"episode {number}/{plan.episodes} was no successful demonstration in {retried + 1} "
                    f"tries (the last: {rejected}); stopped with {len(result.kept)} kept"
                )
                break
            retried += 1
            if not stop:
                say(
                    f"discarded episode {summary.episode_id} ({rejected}); recording episode {number} again, "
                    f"with a new placement (retry {retried} of {plan.retries})"
                )
        if stop:
            break
    return result


def _rejection(summary: EpisodeSummary) -> str | None:
    """Why an episode is no successful demonstration, or None when it is one."""
    if summary.flags:
        return "flagged " + ", ".join(summary.flags)
    if summary.outcome != "success":
        return summary.outcome or "outcome unknown"
    return None


def end_episode(session: RecordingSession, outcome: str | None) -> EpisodeSummary:
    """End the episode being recorded: the operator's verdict when given, else on the twin its reward."""
    operator = session.operator
    if outcome is not None:
        return session.recorder.end(outcome)
    if operator is not None:
        verdict = "success" if operator.success else "failure"
        return session.recorder.end(verdict, twin_reward=operator.max_reward)
    return session.recorder.end()
