"""`rig train`: the command line of policy.train (argument parsing only; the work is in policy/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hardware.profile import TASKS
from rig.commands.counts import non_negative_float, non_negative_int, positive_float, positive_int
from rig.commands.eval import add_eval_arguments
from rig.commands.train_defaults import DEFAULTS


def add_train_parser(commands: argparse._SubParsersAction, default_store: Path) -> None:
    train = commands.add_parser(
        "train",
        help="train π0 on the store's episodes (multi-GPU: torchrun --nproc-per-node K -m rig.cli train …)",
    )
    train.add_argument("--store", type=Path, default=default_store, help="the episode store (a folder)")
    train.add_argument("--config", help=f"pi0, pi0-small or pi0-tiny (default {DEFAULTS.config})")
    train.add_argument(
        "--steps",
        type=positive_int,
        help=f"training steps (default {DEFAULTS.steps}); with --minutes, at most",
    )
    train.add_argument(
        "--minutes",
        type=positive_float,
        help="a wall-clock budget: train as many steps as fit, the learning-rate decay fitted to them "
        "(default: no budget)",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"samples a step, per process (default {DEFAULTS.batch_size})",
    )
    train.add_argument("--lr", type=positive_float, help="peak; default 2.5e-5 with --init, else 3e-4")
    train.add_argument(
        "--warmup-steps",
        type=non_negative_int,
        help="learning-rate warm-up steps (default: steps/10, at most 1000)",
    )
    train.add_argument(
        "--clip-norm", type=positive_float, help=f"gradient norm clip (default {DEFAULTS.clip_norm:g})"
    )
    train.add_argument("--ema", type=float, dest="ema_decay", help="EMA decay, e.g. 0.99 (default: no EMA)")
    train.add_argument(
        "--freeze-prefix", action="store_true", default=None, help="train the action expert only"
    )
    train.add_argument(
        "--init",
        type=Path,
        default=None,
        help="initial weights (π0 safetensors: LeRobot/openpi; default: random)",
    )
    train.add_argument(
        "--norm-stats",
        type=Path,
        default=None,
        help="openpi norm_stats.json (default: the store's own statistics)",
    )
    train.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="paligemma_tokenizer.model (for --config pi0; default: none)",
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
        type=positive_int,
        default=None,
        help="the vision tower's square side in pixels (default: for a twin preset trained from scratch, "
        "the size measured for it, 56; else the config's)",
    )
    train.add_argument(
        "--prompt", default=None, help="use this prompt instead of each episode's task (default: the task)"
    )
    train.add_argument(
        "--augment",
        help="image augmentation: shift (±2 %% translation + colour jitter, the default), color, openpi "
        "(95 %% crop, ±5° rotation, colour) or none",
    )
    train.add_argument(
        "--no-augment", action="store_const", const="none", dest="augment", help="= --augment none"
    )
    train.add_argument(
        "--action-horizon", type=positive_int, help="actions per chunk (default: the config's, 50)"
    )
    train.add_argument(
        "--noise-draws",
        type=positive_int,
        help="flow-matching noise draws per sample; the vision-language prefix runs once for all "
        f"(default {DEFAULTS.noise_draws})",
    )
    train.add_argument(
        "--state-dropout",
        type=non_negative_float,
        help="share of samples trained with the state blanked, so the model learns to look (default 0)",
    )
    train.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        help="auto (default): bf16 autocast on CUDA and on CPUs that multiply bf16 fast, else fp32",
    )
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the training step (default: for runs of 1000 steps or more)",
    )
    train.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: one per core)")
    train.add_argument(
        "--out", type=Path, default=None, help="run folder (default <store>/runs/<time>-<config>)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (default: the store's newest run) with its own settings; "
        "options given with --resume replace them",
    )
    train.add_argument("--seed", type=int, help=f"data order and noise seed (default {DEFAULTS.seed})")
    train.add_argument(
        "--save-every", type=positive_int, help=f"steps between checkpoints (default {DEFAULTS.save_every})"
    )
    train.add_argument(
        "--log-every",
        type=positive_int,
        help=f"steps between rows of loss.csv (default {DEFAULTS.log_every}); the progress bar moves "
        "every second",
    )
    train.add_argument(
        "--workers",
        type=non_negative_int,
        help="data loader processes per training process (default 0: frames come from a decoded cache)",
    )
    train.add_argument(
        "--fsdp", action="store_true", default=None, help="shard weights across GPUs (the 3B size)"
    )
    train.add_argument("--device", default=None, help="default: cuda:<local rank> when available, else cpu")
    train.add_argument(
        "--include-flagged",
        action="store_true",
        default=None,
        help="train on episodes flagged faulted, idle or still too (`rig episodes` shows the flags)",
    )
    train.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        help="every N steps, evaluate the checkpoint on the twin (rig eval's settings below) and redraw the "
        "run's success curve; training waits meanwhile (default: never)",
    )
    train.add_argument(
        "--scene",
        choices=TASKS,
        default=None,
        help="the twin's scene for --eval-every (default: the profile's)",
    )
    train.add_argument("--profile", default="aloha-sim", help="the twin profile for --eval-every")
    add_eval_arguments(train, prefix="eval-")
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from policy.checkpoint import CheckpointError
    from policy.train import TrainingError, TrainSettings, resume_settings, train
    from policy.transform import parse_views
    from policy.weights import WeightFileError, WeightShapeError

    values = {  # the options given: one left unset keeps TrainSettings' default, or the resumed run's
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainSettings)
        if getattr(args, f.name, None) is not None and f.name not in ("store", "out", "resume")
    }
    try:
        if args.cameras:
            values["views"] = parse_views(args.cameras)
        if args.eval_every:
            values["save_every"] = min(values.get("save_every", DEFAULTS.save_every), args.eval_every)
        if args.resume:
            settings = resume_settings(args.store, args.out, **values)
        else:
            settings = TrainSettings(args.store, args.out, **values)
        train(settings, on_checkpoint=_evaluator(args) if args.eval_every else None)
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
    from rig.app.record import with_scene

    evaluation = EvalSettings(
        episodes=args.eval_episodes,
        seed=DEFAULTS.seed if args.seed is None else args.seed,
        episode_s=args.eval_episode_time,
        scheduling=Scheduling(),
        delay_ticks=args.delay_ticks,
        camera_hz=args.camera_hz,
        full_video=args.eval_full_video,
    )
    profile = with_scene(load_profile(args.profile), args.scene, twin_required=True)
    return evaluate_checkpoints(profile, evaluation, args.eval_every)
