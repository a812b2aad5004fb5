"""`rig run`: the policy drives the rig, headless; the operator can take over at any moment.

Start: the followers blend to the leaders (teleop), then to the policy's actions. Commands typed on
the terminal (a letter, then Enter): t take over both arm pairs, a give them back to the policy,
e e-stop / release, q stop. Moving a leader arm beyond a threshold takes that pair over too.
Leaving (q, --seconds, or the watchdog dropping autonomy) blends back to teleop, then parks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hardware.devices import open_devices
from hardware.profile import load_profile
from recorder.store import Store
from rig.app.autonomy import AutonomySession
from rig.commands.autonomy import add_policy_arguments, make_scheduler, open_policy_or_explain
from rig.commands.record import Keys
from rig.modes import Autonomous
from rig.teleop import ENGAGE_S, load_calibrations


def add_run_parser(commands: argparse._SubParsersAction, default_profile: str, default_store: Path) -> None:
    run = commands.add_parser("run", help="autonomous mode: the policy drives (t take over, a give back)")
    add_policy_arguments(run)
    run.add_argument("--task", default=None, help="the prompt (default: the task the policy was trained on)")
    run.add_argument("--profile", default=default_profile)
    run.add_argument("--seconds", type=float, default=None, help="stop after this long on the rig clock")
    run.add_argument("--until-success", action="store_true", help="on the twin: stop when the task is done")
    run.add_argument("--record", action="store_true", help="record the run as an episode (tagged autonomous)")
    run.add_argument("--store", type=Path, default=default_store)
    run.add_argument("--calibration-dir", type=Path, default=None)
    run.set_defaults(run=run_autonomous)


def run_autonomous(args: argparse.Namespace) -> int:

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
    keys = Keys(sys.stdin)
    profile = load_profile(args.profile)
    store = Store(args.store) if args.record else None
    with open_devices(profile) as devices:
        session = AutonomySession(devices, load_calibrations(devices, args.calibration_dir), store)
        loop = session.loop
        loop.start()
        try:
            session.teleop(ENGAGE_S)
            session.wait(ENGAGE_S)
            scheduler = make_scheduler(policy, prompt, args, loop)
            if session.recorder is not None:
                session.recorder.begin(prompt, tags=("autonomous",))
            mode = session.engage(scheduler, ramp_s=0.5)
            say("autonomous: t take over, a give back, e e-stop/release, q stop (then Enter)")
            outcome = _drive(session, mode, keys, args, say)
            session.teleop(ENGAGE_S)
            session.wait(ENGAGE_S)
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


def _drive(session: AutonomySession, mode: Autonomous, keys: Keys, args: argparse.Namespace, say) -> str:
    """Until q, --seconds, success (--until-success) or the watchdog leaving autonomous mode."""
    loop = session.loop
    step = loop.wait_for_step()
    end = step.t + args.seconds if args.seconds else float("inf")
    next_status = step.t
    while step.t < end:
        step = loop.wait_for_step(step.index, timeout=30)
        for event in step.events:
            say(f"  {step.t:7.2f} s  {event}")
        key = keys.poll()
        if key == "q":
            return "stopped by the operator"
        if key == "t":
            mode.take_over()
        elif key == "a":
            mode.hand_back()
        elif key == "e":
            loop.release_estop() if loop.estopped else loop.estop()
        if loop.mode is not mode and not loop.estopped:
            return "the policy stopped delivering actions; the rig held and left autonomous mode"
        if args.until_success and session.reward.success:
            return "task done"
        if step.t >= next_status:
            next_status = step.t + 1.0
            say(f"  {step.t:7.2f} s  {step.mode:12s} reward {session.reward.best}")
    return "time is up"
