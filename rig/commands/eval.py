"""`rig eval`: N seeded autonomous episodes on the twin, the success rate with a confidence interval.

Per episode: the scene is reset with the episode's seed, the followers return (through teleop, with
the twin's leaders held at the demonstrations' start pose) to where the recorded demonstrations
began, then the policy drives for the episode time or until the task is done. Every episode is
recorded into the store as an ordinary episode tagged `eval` (video included), with the twin's
verdict as its outcome; training skips `eval` episodes. A checkpoint's result is appended to its
run's `eval.csv`, and the run's `success.png` redrawn: the success curve against training steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hardware.devices import open_devices
from hardware.profile import TASKS, load_profile
from policy.progress import EVAL_LOG, EvalResult, append_eval, plot_success, wilson_interval
from recorder.store import Store
from rig.commands.autonomy import (
    AutonomySession,
    add_policy_arguments,
    make_scheduler,
    open_policy_or_explain,
    start_row,
)
from rig.commands.record import with_scene
from rig.teleop import load_calibrations

RESET_S = 2.0


def add_eval_parser(commands: argparse._SubParsersAction, default_profile: str, default_store: Path) -> None:
    evaluate = commands.add_parser("eval", help="success rate of a policy over seeded episodes on the twin")
    add_policy_arguments(evaluate)
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--task", choices=TASKS, default=None, help="default: the profile's")
    evaluate.add_argument("--prompt", default=None, help="default: the task the policy was trained on")
    evaluate.add_argument("--episode-time", type=float, default=10.0, help="seconds per episode (simulated)")
    evaluate.add_argument("--profile", default=default_profile)
    evaluate.add_argument("--store", type=Path, default=default_store, help="where the eval episodes go")
    evaluate.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from rig.operator import Demonstration, ScriptedOperator

    def say(line: str) -> None:
        print(line, flush=True)

    profile = with_scene(load_profile(args.profile), args.task, twin_required=True)
    twin = profile.twin
    assert twin is not None
    opened = open_policy_or_explain(args)
    if opened is None:
        return 1
    policy, info = opened
    prompt = args.prompt or (info.tasks[0] if info.tasks else twin.task.replace("_", " "))
    say(
        f"eval of {info.config} (step {info.step}) on {twin.task}: {args.episodes} episodes; prompt: {prompt}"
    )
    store = Store(args.store)
    successes, started = 0, time.monotonic()
    with open_devices(profile, lockstep=True) as devices:
        assert devices.twin is not None
        session = AutonomySession(devices, load_calibrations(devices), store)
        operator = ScriptedOperator(devices.twin)
        loop = session.loop
        loop.start()
        try:
            for episode in range(args.episodes):
                seed = args.seed + episode
                start = start_row(devices)
                dt = 1.0 / profile.rate_hz
                operator.start(Demonstration(devices.twin.world.task, np.vstack([start, start]), dt))
                session.teleop(RESET_S)
                session.wait(RESET_S + 0.5)
                devices.twin.world.scatter_objects(seed)  # the arms are home: the episode's scene
                session.reward.reset()
                scheduler = make_scheduler(policy, prompt, args, loop)
                assert session.recorder is not None
                session.recorder.begin(prompt, tags=("eval",))
                mode = session.engage(scheduler, ramp_s=0.2)
                session.wait(
                    args.episode_time, until=lambda m=mode: session.reward.success or loop.mode is not m
                )
                scheduler.close()
                success = session.reward.success
                successes += success
                verdict = "success" if success else "failure"
                summary = session.recorder.end(verdict, twin_reward=session.reward.best)
                stats = scheduler.stats
                say(
                    f"episode {episode + 1}/{args.episodes} (seed {seed}): {verdict}, "
                    f"reward {session.reward.best}/{devices.twin.world.max_reward}, chunks {stats.chunks}, "
                    f"starved ticks {stats.starved_ticks}; stored as episode {summary.episode_id}"
                )
                for event in stats.events[-3:]:
                    say(f"  {event}")
        finally:
            operator.stop()
            loop.stop()
    low, high = wilson_interval(successes, args.episodes)
    wall_s = time.monotonic() - started
    say(
        f"success {successes}/{args.episodes} = {successes / max(args.episodes, 1):.0%} "
        f"(95 % CI {low:.0%}–{high:.0%}); {wall_s:.0f} s; "
        f"videos: `rig episodes --store {args.store}` (tagged eval)"
    )
    run = _run_of(args.checkpoint)
    if run is not None:
        result = EvalResult(
            info.step, twin.task, args.episodes, successes, low, high, args.seed, args.strategy, wall_s
        )
        append_eval(run, result)
        say(f"logged to {run / EVAL_LOG}; success curve {plot_success(run)}")
    return 0


def _run_of(checkpoint: Path | None) -> Path | None:
    """Where a `--checkpoint`'s evaluations are logged: its run folder (None for a policy server)."""
    from policy.checkpoint import resolve_checkpoint, run_of

    return None if checkpoint is None else run_of(resolve_checkpoint(checkpoint))
