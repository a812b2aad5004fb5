"""`rig train`: the command line of policy.train (argument parsing only; the work is in policy/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_train_parser(commands: argparse._SubParsersAction, default_store: Path) -> None:
    train = commands.add_parser(
        "train",
        help="train π0 on the store's episodes (multi-GPU: torchrun --nproc-per-node K -m rig.cli train …)",
    )
    train.add_argument("--store", type=Path, default=default_store, help="the episode store (a folder)")
    train.add_argument("--config", default="pi0-small", help="pi0, pi0-small or pi0-tiny")
    train.add_argument("--steps", type=int, default=1000)
    train.add_argument("--batch-size", type=int, default=8, help="per process")
    train.add_argument("--lr", type=float, default=None, help="peak; default 2.5e-5 with --init, else 3e-4")
    train.add_argument("--warmup-steps", type=int, default=None)
    train.add_argument("--clip-norm", type=float, default=1.0)
    train.add_argument("--ema", type=float, default=None, dest="ema_decay", help="EMA decay, e.g. 0.99")
    train.add_argument("--freeze-prefix", action="store_true", help="train the action expert only")
    train.add_argument(
        "--init", type=Path, default=None, help="initial weights (π0 safetensors: LeRobot/openpi)"
    )
    train.add_argument("--norm-stats", type=Path, default=None, help="openpi norm_stats.json to use instead")
    train.add_argument(
        "--tokenizer", type=Path, default=None, help="paligemma_tokenizer.model (for --config pi0)"
    )
    train.add_argument("--cameras", default=None, help="store cameras in model slot order, comma-separated")
    train.add_argument("--prompt", default=None, help="use this prompt instead of each episode's task")
    train.add_argument("--no-augment", action="store_false", dest="augment")
    train.add_argument("--action-horizon", type=int, default=None, help="actions per chunk (default 50)")
    train.add_argument(
        "--out", type=Path, default=None, help="run folder (default <store>/runs/<time>-<config>)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out (default: the store's newest run)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save-every", type=int, default=250)
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--workers", type=int, default=2, help="data loader processes per training process")
    train.add_argument("--fsdp", action="store_true", help="shard weights across GPUs (the 3B size)")
    train.add_argument("--device", default=None, help="default: cuda:<local rank> when available, else cpu")
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from policy.checkpoint import CheckpointError
    from policy.train import TrainingError, TrainSettings, train
    from policy.weights import WeightFileError, WeightShapeError

    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings) if hasattr(args, f.name)
    }
    values["cameras"] = tuple(args.cameras.split(",")) if args.cameras else TrainSettings.cameras
    try:
        train(TrainSettings(**values))
    except (
        TrainingError,
        CheckpointError,
        WeightFileError,
        WeightShapeError,
        ValueError,
        FileNotFoundError,
    ) as error:
        print(f"rig train: {error}", file=sys.stderr)
        return 1
    return 0
