"""`rig eval`: N seeded autonomous episodes on the twin, the success rate with a confidence interval
(the operation is rig.app.evaluate). A checkpoint's result is appended to its run's `eval.csv`, and
the run's `success.png` redrawn: the success curve against training steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from hardware.profile import TASKS
from rig.app.evaluate import EvalSettings
from rig.commands.autonomy import add_policy_arguments, open_policy_or_explain, policy_spec
from rig.commands.counts import non_negative_int, positive_float, positive_int


def add_eval_parser(commands: argparse._SubParsersAction, default_profile: str, default_store: Path) -> None:
    evaluate = commands.add_parser("eval", help="success rate of a policy over seeded episodes on the twin")
    add_policy_arguments(evaluate)
    add_eval_arguments(evaluate)
    evaluate.add_argument(
        "--task", choices=TASKS, default=None, help="the twin's scene (default: the profile's)"
    )
    evaluate.add_argument("--prompt", default=None, help="default: the task the policy was trained on")
    evaluate.add_argument(
        "--profile", default=default_profile, help=f"a twin profile (default {default_profile})"
    )
    evaluate.add_argument("--store", type=Path, default=default_store, help="where the eval episodes go")
    evaluate.set_defaults(run=run_eval)


def add_eval_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The evaluation's own settings; `rig train` takes them too, for its evaluations while training."""
    defaults = EvalSettings()
    parser.add_argument(
        f"--{prefix}episodes",
        type=positive_int,
        default=defaults.episodes,
        help=f"episodes (default {defaults.episodes})",
    )
    parser.add_argument(
        f"--{prefix}episode-time",
        type=positive_float,
        default=defaults.episode_s,
        help=f"simulated seconds per episode at most (default {defaults.episode_s:g})",
    )
    parser.add_argument(
        "--delay-ticks",
        type=non_negative_int,
        default=defaults.delay_ticks,
        help=f"simulated inference latency in control ticks (default {defaults.delay_ticks}: 100 ms at "
        "50 Hz); fixed, so a result does not depend on the machine's speed or load",
    )
    parser.add_argument(
        "--camera-hz",
        type=positive_float,
        default=defaults.camera_hz,
        help=f"how often the twin renders the policy's cameras (default {defaults.camera_hz:g})",
    )
    parser.add_argument(
        f"--{prefix}full-video",
        action="store_true",
        help="render and record every camera of the profile at its size and rate (slower; default: only "
        "what the policy sees)",
    )


def run_eval(args: argparse.Namespace) -> int:
    from hardware.profile import load_profile
    from policy.progress import EVAL_LOG, wilson_interval
    from recorder.store import Store
    from rig.app.evaluate import evaluate, log_result
    from rig.app.record import with_scene

    profile = with_scene(load_profile(args.profile), args.task, twin_required=True)
    settings = EvalSettings(
        episodes=args.episodes,
        seed=args.seed,
        episode_s=args.episode_time,
        prompt=args.prompt,
        scheduling=policy_spec(args).scheduling,
        delay_ticks=args.delay_ticks,
        camera_hz=args.camera_hz,
        full_video=args.full_video,
    )
    opened = open_policy_or_explain(args)
    if opened is None:
        return 1
    policy, info = opened
    print(f"eval of {info.config} (step {info.step}) on {profile.twin.task if profile.twin else '?'}: "
          f"{settings.episodes} episodes", flush=True)  # fmt: skip
    report = evaluate(
        policy, info, profile, Store(args.store), settings, lambda line: print(line, flush=True)
    )
    low, high = wilson_interval(report.successes, settings.episodes)
    print(
        f"success {report.successes}/{settings.episodes} = {report.successes / settings.episodes:.0%} "
        f"(95 % CI {low:.0%}–{high:.0%}); {report.wall_s:.0f} s; "
        f"videos: `rig episodes --store {args.store}` (tagged eval)",
        flush=True,
    )
    run = _run_of(args.checkpoint)
    if run is not None:
        print(f"logged to {run / EVAL_LOG}; success curve {log_result(run, info.step, report, settings)}")
    return 0


def _run_of(checkpoint: Path | None) -> Path | None:
    """Where a `--checkpoint`'s evaluations are logged: its run folder (None for a policy server)."""
    from policy.checkpoint import resolve_checkpoint, run_of

    return None if checkpoint is None else run_of(resolve_checkpoint(checkpoint))
