"""`rig train`: the command line of policy.train (argument parsing only; the work is in policy/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hardware.profile import TASKS
from rig.commands.eval import add_eval_arguments


def add_train_parser(commands: argparse._SubParsersAction, default_store: Path) -> None:
    train = commands.add_parser(
        "train",
        help="train π0 on the store's episodes (multi-GPU: torchrun --nproc-per-node K -m rig.cli train …)",
    )
    train.add_argument("--store", type=Path, default=default_store, help="the episode store (a folder)")
    train.add_argument("--config", default="pi0-small", help="pi0, pi0-small or pi0-tiny")
    train.add_argument(
        "--steps", type=int, default=1000, help="training steps (default 1000); with --minutes, at most"
    )
    train.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="a wall-clock budget: train as many steps as fit, the learning-rate decay fitted to them",
    )
    train.add_argument(
        "--batch-size", type=int, default=None, help="samples a step, per process (default 32)"
    )
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
    train.add_argument(
        "--cameras",
        default=None,
        help="what the model sees, slot by slot: a preset (transfer_cube, the default: the twin's top "
        "camera around the cube's placements; insertion; aloha: three whole cameras) or views separated "
        "by commas, a store camera optionally with the region of its frame in fractions, "
        "CAMERA@left,top,right,bottom",
    )
    train.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="the vision tower's square side in pixels (default: the config's)",
    )
    train.add_argument("--prompt", default=None, help="use this prompt instead of each episode's task")
    train.add_argument(
        "--augment",
        default="shift",
        help="image augmentation: shift (±2 %% translation + colour jitter, the default), color, openpi "
        "(95 %% crop, ±5° rotation, colour) or none",
    )
    train.add_argument(
        "--no-augment", action="store_const", const="none", dest="augment", help="= --augment none"
    )
    train.add_argument("--action-horizon", type=int, default=None, help="actions per chunk (default 50)")
    train.add_argument(
        "--noise-draws",
        type=int,
        default=1,
        help="flow-matching noise draws per sample; the vision-language prefix runs once for all (default 1)",
    )
    train.add_argument(
        "--state-dropout",
        type=float,
        default=0.0,
        help="share of samples trained with the state blanked, so the model learns to look (default 0)",
    )
    train.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto (default): bf16 autocast on CUDA and on CPUs that multiply bf16 fast, else fp32",
    )
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training step (default: for runs of 1000 steps or more)",
    )
    train.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: one per core)"
    )
    train.add_argument(
        "--out", type=Path, default=None, help="run folder (default <store>/runs/<time>-<config>)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out (default: the store's newest run)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--save-every", type=int, default=250)
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data loader processes per training process (default 0: frames come from a decoded cache)",
    )
    train.add_argument("--fsdp", action="store_true", help="shard weights across GPUs (the 3B size)")
    train.add_argument("--device", default=None, help="default: cuda:<local rank> when available, else cpu")
    train.add_argument(
        "--include-flagged",
        action="store_true",
        help="train on episodes flagged faulted, idle or still too (`rig episodes` shows the flags)",
    )
    train.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="every N steps, evaluate the checkpoint on the twin (rig eval's settings below) and redraw the "
        "run's success curve; training waits meanwhile (default: never)",
    )
    train.add_argument("--scene", choices=TASKS, default=None, help="the twin's scene for --eval-every")
    train.add_argument("--profile", default="aloha-sim", help="the twin profile for --eval-every")
    add_eval_arguments(train, prefix="eval-")
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from policy.checkpoint import CheckpointError
    from policy.train import TrainingError, TrainSettings, train
    from policy.transform import parse_views
    from policy.weights import WeightFileError, WeightShapeError

    values = {  # an option left unset keeps TrainSettings' default
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainSettings)
        if getattr(args, f.name, None) is not None
    }
    try:
        if args.cameras:
            values["views"] = parse_views(args.cameras)
        if args.eval_every:
            values["save_every"] = min(args.save_every, args.eval_every)
        train(TrainSettings(**values), on_checkpoint=_evaluator(args) if args.eval_every else None)
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


def _evaluator(args: argparse.Namespace) -> Callable[[Path, int], None]:
    """The --eval-every hook: rig eval's operation on each N-th checkpoint of the run."""
    from hardware.profile import load_profile
    from rig.app.autonomy import Scheduling
    from rig.app.evaluate import EvalSettings, evaluate_checkpoints
    from rig.commands.record import with_scene

    evaluation = EvalSettings(
        episodes=args.eval_episodes,
        seed=args.seed,
        episode_s=args.eval_episode_time,
        scheduling=Scheduling(),
        delay_ticks=args.delay_ticks,
        camera_hz=args.camera_hz,
        full_video=args.eval_full_video,
    )
    profile = with_scene(load_profile(args.profile), args.scene, twin_required=True)
    return evaluate_checkpoints(profile, evaluation, args.eval_every)
