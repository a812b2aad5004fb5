"""`rig runs`: the store's training runs, each checkpoint with its loss and evaluations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_runs_parser(commands: argparse._SubParsersAction, default_store: Path) -> None:
    runs = commands.add_parser(
        "runs", help="list training runs and their checkpoints: steps, loss, eval results"
    )
    runs.add_argument("--store", type=Path, default=default_store, help="the episode store (a folder)")
    runs.set_defaults(run=list_runs_command)


def list_runs_command(args: argparse.Namespace) -> int:
    from policy.runs import RUNS, list_runs

    runs = list_runs(args.store)
    if not runs:
        where = args.store / RUNS
        print(
            f"rig runs: no training runs in {where}; `rig train --store {args.store}` starts one",
            file=sys.stderr,
        )
        return 1
    for run in runs:
        print("\n".join(run.describe()))
    return 0
