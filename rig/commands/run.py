"""`rig run`: the policy drives the rig, headless; the operator can take over at any moment.

Start: the followers blend to the leaders (teleop), then to the policy's actions. Commands typed on
the terminal (a letter, then Enter): t take over both arm pairs, a give them back to the policy,
e e-stop / release, q stop. Moving a leader arm beyond a threshold takes that pair over too.
Leaving (q, --seconds, or the watchdog dropping autonomy) blends back to teleop, then parks.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rig.commands.autonomy import add_policy_arguments, open_policy_or_explain, policy_spec
from rig.commands.counts import positive_float

if TYPE_CHECKING:
    from rig.app.autonomy import AutonomySession
    from rig.commands.terminal import TerminalCommands
    from rig.modes import Autonomous
    from rig.step import Step

STATUS_EVERY_S = 1.0  # rig-clock seconds between status lines (and summaries of repeated events)


def add_run_parser(commands: argparse._SubParsersAction, default_profile: str, default_store: Path) -> None:
    run = commands.add_parser("run", help="autonomous mode: the policy drives (t take over, a give back)")
    add_policy_arguments(run)
    run.add_argument("--task", default=None, help="the prompt (default: the task the policy was trained on)")
    run.add_argument("--profile", default=default_profile, help="the rig profile (aloha-sim: the twin)")
    run.add_argument(
        "--seconds", type=positive_float, help="stop after this long on the rig clock (default: at q)"
    )
    run.add_argument("--until-success", action="store_true", help="on the twin: stop when the task is done")
    run.add_argument("--record", action="store_true", help="record the run as an episode (tagged autonomous)")
    run.add_argument("--store", type=Path, default=default_store, help="where --record puts the episode")
    run.add_argument(
        "--calibration-dir", type=Path, help="where the arms' calibrations are (default: the data dir's)"
    )
    run.set_defaults(run=run_autonomous)


def run_autonomous(args: argparse.Namespace) -> int:
    from hardware.devices import open_devices
    from hardware.profile import load_profile
    from recorder.store import Store
    from rig.app.autonomy import AutonomySession, schedule
    from rig.commands.terminal import TerminalCommands
    from rig.modes import RAMPS
    from rig.teleop import load_calibrations

    def say(line: str) -> None:
        print(line, flush=True)

    opened = open_policy_or_explain(args)
    if opened is None:
        return 1
    policy, info = opened
    prompt = args.task or (info.tasks[0] if info.tasks else "")
    if not prompt:
        print("rig run: the policy names no task it was trained on; give one with --task", file=sys.stderr)
        return 1
    say(f"policy {info.config} (step {info.step}), cameras {', '.join(info.cameras)}; task: {prompt}")
    keys = TerminalCommands(sys.stdin)
    profile = load_profile(args.profile)
    store = Store(args.store) if args.record else None
    with open_devices(profile) as devices:
        session = AutonomySession(devices, load_calibrations(devices, args.calibration_dir), store)
        loop = session.loop
        loop.start()
        try:
            session.teleop(RAMPS.teleop_s)
            session.wait(RAMPS.teleop_s)
            scheduler = schedule(policy, prompt, policy_spec(args).scheduling, loop)
            if session.recorder is not None:
                session.recorder.begin(prompt, tags=("autonomous",))
            mode = session.engage(scheduler, ramp_s=RAMPS.autonomy_s)
            say("autonomous: t take over, a give back, e e-stop/release, q stop (then Enter)")
            outcome = _drive(session, mode, keys, args, say)
            session.teleop(RAMPS.teleop_s)
            session.wait(RAMPS.teleop_s)
            scheduler.close()
            stats = scheduler.stats
            say(
                f"{outcome}; chunks {stats.chunks}, starved ticks {stats.starved_ticks}, "
                f"twin reward {session.reward.best}" + (" (success)" if session.reward.success else "")
            )
            if session.recorder is not None:
                verdict = "success" if session.reward.success else None
                summary = session.recorder.end(
                    verdict, twin_reward=session.reward.best if devices.twin else None
                )
                say(summary.describe())
        finally:
            loop.stop()
    return 0


def _drive(
    session: AutonomySession,
    mode: Autonomous,
    keys: TerminalCommands,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> str:
    """Until q, --seconds, success (--until-success) or the watchdog leaving autonomous mode."""
    watch = _Watch(session, mode, keys, args.until_success, say)
    session.loop.wait_seconds(args.seconds or math.inf, until=watch)
    return watch.outcome or "time is up"


class _Watch:
    """What `rig run` does with every step while the policy drives: tells its events and a status
    line, obeys the operator's keys, and says why to stop (`outcome`) once it should."""

    def __init__(
        self,
        session: AutonomySession,
        mode: Autonomous,
        keys: TerminalCommands,
        until_success: bool,
        say: Callable[[str], None],
    ) -> None:
        from rig.event_log import RepeatSummary

        self.session, self.mode, self.keys, self.until_success, self.say = (
            session,
            mode,
            keys,
            until_success,
            say,
        )
        self.repeats = RepeatSummary()
        self.next_status = -math.inf
        self.outcome: str | None = None

    def __call__(self, step: Step) -> bool:
        self.outcome = self._reason_to_stop(step)
        return self.outcome is not None

    def _reason_to_stop(self, step: Step) -> str | None:
        loop, say = self.session.loop, self.say
        for event in step.events:
            if self.repeats.first(event):
                say(f"  {step.t:7.2f} s  {event}")
        key = self.keys.poll()
        if key == "q":
            return "stopped by the operator"
        if key == "t":
            self.mode.take_over()
        elif key == "a":
            self.mode.hand_back()
        elif key == "e":
            loop.release_estop() if loop.estopped else loop.estop()
        if loop.mode is not self.mode and not loop.estopped:
            return "the policy stopped delivering actions; the rig held and left autonomous mode"
        if self.until_success and self.session.reward.success:
            return "task done"
        if step.t >= self.next_status:
            self.next_status = step.t + STATUS_EVERY_S
            for line in self.repeats.summary(STATUS_EVERY_S):
                say(f"  {step.t:7.2f} s  {line}")
            say(f"  {step.t:7.2f} s  {step.mode:12s} reward {self.session.reward.best}")
        return None
