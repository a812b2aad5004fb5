"""`rig demo`: the appliance's whole job on the twin in one command — record, train, evaluate.

The scripted operator records N successful episodes through the leader arms into a fresh store (a
failed or flagged one is discarded and recorded again, `rig record --successful-only`), `rig train`
trains a small π0 on them, and `rig eval` lets the policy drive seeded scenes. Each stage is the
ordinary command, run as a child process (so each owns the store and the devices in turn, and its
own progress shows as it would on its own); a summary ends the run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rig.commands.counts import positive_float, positive_int

INSTRUCTIONS = {"transfer_cube": "transfer the cube", "insertion": "insert the peg into the socket"}


def add_demo_parser(commands: argparse._SubParsersAction, default_profile: str, data_dir: Path) -> None:
    demo = commands.add_parser(
        "demo",
        help="record → train → autonomous on the twin, in one command (~20 min on a 2-core CPU)",
    )
    numbers: tuple[tuple[str, Callable[[str], float], str], ...] = (
        ("episodes", positive_int, "successful scripted demonstrations to record"),
        ("minutes", positive_float, "training time budget (the run's length follows from its measured pace)"),
        ("steps", positive_int, "training steps at most (within --minutes)"),
        ("batch_size", positive_int, "training samples a step"),
        ("eval_episodes", positive_int, "seeded episodes the policy drives alone"),
        ("episode_time", positive_float, "simulated seconds per evaluation episode at most"),
    )
    for name, kind, meaning in numbers:
        flag = "--" + name.replace("_", "-")
        demo.add_argument(flag, type=kind, default=getattr(DemoDefaults, name), help=meaning)
    demo.add_argument(
        "--task", choices=tuple(INSTRUCTIONS), default="transfer_cube", help="the twin's task to learn"
    )
    demo.add_argument("--config", default="pi0-small", help="π0 size (pi0-tiny for a quick look)")
    demo.add_argument("--profile", default=default_profile, help="a twin profile (name or .toml path)")
    demo.add_argument("--store", type=Path, default=None, help=f"default: a new folder under {data_dir}")
    demo.set_defaults(run=run_demo, data_dir=data_dir)


@dataclass(frozen=True)
class DemoDefaults:
    """Chosen by measurement on a 2-core CPU shared with other work (docs/learning.md): as much
    training as fits beside recording and evaluation in ~20 minutes. The 10 Hz camera saves half the
    recording time for training; on fresh clones 11 minutes gave 6/10 and 5/10 (docs/learning.md)."""

    episodes: int = 40
    camera_hz: float = 10.0  # as rig eval renders the policy's camera: a third of the recording time
    minutes: float = 11.0
    steps: int = 2000
    batch_size: int = 32
    eval_episodes: int = 10
    episode_time: float = 10.0


def run_demo(args: argparse.Namespace) -> int:
    from policy.transform import TWIN_VIEWS

    store = args.store or args.data_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run = store / "runs" / f"demo-{args.config}"
    instruction = INSTRUCTIONS[args.task]
    cameras = ",".join(dict.fromkeys(view.camera for view in TWIN_VIEWS[args.task]))  # only what π0 sees
    stages = {
        "record": ["record", "--store", store, "--profile", args.profile, "--task", instruction,
                   "--scene", args.task, "--episodes", args.episodes, "--countdown", 1, "--successful-only",
                   "--cameras", cameras, "--camera-hz", DemoDefaults.camera_hz],
        "train": ["train", "--store", store, "--config", args.config, "--minutes", args.minutes,
                  "--steps", args.steps, "--batch-size", args.batch_size, "--cameras", args.task,
                  "--ema", 0.999, "--out", run],
        "eval": ["eval", "--checkpoint", run, "--episodes", args.eval_episodes, "--task", args.task,
                 "--episode-time", args.episode_time, "--store", store, "--profile", args.profile],
    }  # fmt: skip
    took: dict[str, float] = {}
    for number, (stage, command) in enumerate(stages.items(), 1):
        print(f"== {number}/{len(stages)} {stage}: rig {' '.join(map(str, command))}", flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "rig.cli", *map(str, command)], stdin=subprocess.DEVNULL
        )
        took[stage] = time.monotonic() - started
        if result.returncode != 0:
            print(
                f"rig demo: the {stage} stage failed (exit {result.returncode}); see above", file=sys.stderr
            )
            return result.returncode
    print(summary(store, run, took), flush=True)
    return 0


def summary(store: Path, run: Path, took: dict[str, float]) -> str:
    from policy.checkpoint import latest_checkpoint
    from policy.progress import LOSS_PLOT, SUCCESS_PLOT
    from recorder.store import catalogue_of

    with catalogue_of(store) as catalogue:
        recorded = catalogue.episodes(exclude_tag="eval")
        evaluated = catalogue.episodes(tag="eval")
    demos = sum(e.outcome == "success" for e in recorded)
    wins = sum(e.outcome == "success" for e in evaluated)
    rate = wins / len(evaluated) if evaluated else 0.0
    return "\n".join(
        [
            "== summary",
            f"recorded  {len(recorded)} episodes ({demos} successful demos) in {took['record']:.0f} s",
            f"trained   {took['train']:.0f} s; checkpoint {latest_checkpoint(run)}",
            f"curves    {run / LOSS_PLOT}, {run / SUCCESS_PLOT}",
            f"autonomy  {wins}/{len(evaluated)} successful = {rate:.0%} in {took['eval']:.0f} s",
            f"store     {store}  (rig episodes --store {store}; eval videos are tagged eval)",
        ]
    )
