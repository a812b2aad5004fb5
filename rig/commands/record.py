"""`rig record`: teleoperate and record episodes, headless (the operation: rig.app.record).

Commands typed on the terminal (a letter, then Enter): e end the episode now, r re-record it
(discard), s / f mark it a success / failure, q stop after this episode. On the twin the scripted
operator performs the episodes, and each episode's outcome is the twin's reward.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from hardware.devices import open_devices
from hardware.profile import Profile, Task, load_profile
from recorder.recorder import EpisodeRecorder
from recorder.store import Store, StoreFullError
from rig.app.record import (
    RecordingSession,
    RecordPlan,
    bytes_needed,
    record_episodes,
    with_cameras,
    with_scene,
)
from rig.commands.terminal import TerminalCommands
from rig.teleop import load_calibrations

__all__ = ["RecordPlan", "run_record"]


def run_record(
    profile_name: str,
    plan: RecordPlan,
    store_dir: Path,
    calibration_dir: Path | None,
    out: TextIO,
    scene: Task | None = None,
    cameras: Sequence[str] | None = None,
    camera_hz: float | None = None,
) -> int:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    profile = with_cameras(with_scene(load_profile(profile_name), scene), cameras, camera_hz)
    if plan.successful_only and profile.twin is None:
        print("rig record: --successful-only needs the twin: its reward judges each episode", file=sys.stderr)
        return 1
    with Store(store_dir) as store:
        return _record_into(store, profile, plan, calibration_dir, say)


def _record_into(
    store: Store, profile: Profile, plan: RecordPlan, calibration_dir: Path | None, say: Callable[[str], None]
) -> int:
    for episode_id in store.recovered:
        say(f"episode {episode_id} was interrupted by a crash; what was written is kept, marked interrupted")
    try:
        store.check_free_space(bytes_needed(profile, plan))
    except StoreFullError as error:
        print(f"rig record: {error}", file=sys.stderr)
        return 1
    commands = TerminalCommands(sys.stdin)
    with open_devices(profile) as devices:
        session = RecordingSession(devices, store, load_calibrations(devices, calibration_dir))
        session.loop.start()
        try:
            result = record_episodes(session, plan, say, commands)
        except KeyboardInterrupt:
            print(f"rig record: {stopped_by_interrupt(session.recorder, store)}", file=sys.stderr)
            return 130
        finally:
            session.loop.stop()
    if session.recorder.error:
        print(f"rig record: {session.recorder.error}", file=sys.stderr)
        return 1
    say(result.describe(store.root))
    if result.gave_up:
        print(f"rig record: {result.gave_up}", file=sys.stderr)
        return 1
    return 0


def stopped_by_interrupt(recorder: EpisodeRecorder, store: Store) -> str:
    """^C while recording: the episode being recorded is kept (marked interrupted), and so is the rest."""
    cut = ""
    if recorder.recording:
        summary = recorder.end(cut_short="stopped by ^C while recording")
        cut = f"; episode {summary.episode_id}, cut short, is kept marked interrupted"
    kept = len(store.catalogue.episodes())
    return f"stopped by ^C; the data is kept: {kept} episode(s) in {store.root}{cut}"
