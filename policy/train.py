"""`rig train`: from an episode store to a π0 checkpoint in one command.

AdamW (β 0.9/0.95) with linear warmup and cosine decay, gradient clipping, an optional EMA of the
weights, an optional frozen prefix (train the action expert only). Multi-GPU by running the same
command under `torchrun --nproc-per-node K -m rig.cli train …`: DDP by default, FSDP with `--fsdp`
(for the 3B size). Each rank reads its own shard of the data and draws its own noise; the loss is
normalized by a fixed count, so averaging the ranks' gradients equals one step on the whole batch.

A run folder holds `checkpoints/<step>/` (see policy.checkpoint), `loss.csv`, `loss.png` and
`run.json`. Ctrl-C (or SIGTERM) saves a checkpoint at the current step; `--resume` continues.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from policy.batch import TrainingBatch
from policy.checkpoint import (
    MODEL_FILE,
    CheckpointMeta,
    TrainState,
    checkpoint_dir,
    latest_checkpoint,
    load_train_state,
    read_meta,
    save_checkpoint,
)
from policy.config import Pi0Config, get_config
from policy.data import DataConfig, augment_batch, batches, make_loader
from policy.distributed import Ranks, agree, full_state, mean_over_ranks, restore_optimizer, wrap_model
from policy.normalize import Normalizer, compute_norm_stats, load_openpi_norm_stats
from policy.pi0 import Pi0, sample_flow_time
from policy.progress import LossLog, Progress, plot_loss
from policy.tokenizer import make_tokenizer
from policy.weights import load_pi0_weights
from recorder.catalogue import Catalogue
from recorder.reader import CATALOGUE_FILE

RUN_FILE = "run.json"
RUNS = "runs"
MAX_NONFINITE_STEPS = 5


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class TrainSettings:
    store: Path
    out: Path | None = None  # the run folder; default <store>/runs/<time>-<config>
    config: str = "pi0-small"
    steps: int = 1000
    batch_size: int = 8
    lr: float | None = None  # peak; default 2.5e-5 from pretrained weights (openpi), 3e-4 from scratch
    warmup_steps: int | None = None  # default min(1000, steps // 10)
    final_lr_ratio: float = 0.1
    weight_decay: float = 1e-10
    clip_norm: float = 1.0
    ema_decay: float | None = None
    freeze_prefix: bool = False
    init: Path | None = None  # published or earlier weights (safetensors)
    norm_stats: Path | None = None  # openpi norm_stats.json instead of the store's statistics
    tokenizer: Path | None = None  # PaliGemma SentencePiece model, for the `pi0` config
    cameras: tuple[str, ...] = DataConfig().cameras
    prompt: str | None = None
    augment: bool = True
    action_horizon: int | None = None
    resume: bool = False
    seed: int = 0
    save_every: int = 250
    log_every: int = 10
    workers: int = 2
    fsdp: bool = False
    device: str | None = None  # default cuda:<local rank> when available, else cpu

    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 2.5e-5 if self.init is not None else 3e-4


@dataclass(frozen=True)
class Schedule:
    """Linear warmup from ~0 to the peak, then cosine decay to final_lr by the last step."""

    peak: float
    warmup: int
    total: int
    final: float

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (self.peak - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainResult:
    run: Path
    checkpoint: Path
    step: int
    loss: float
    interrupted: bool


# -- one step -------------------------------------------------------------------------------------
def training_loss(
    model: nn.Module, batch: TrainingBatch, noise: torch.Tensor, time: torch.Tensor
) -> torch.Tensor:
    """Mean flow-matching error over the robot's real action dimensions; padded steps count as zero.

    The denominator is fixed (batch × horizon × real dims), so the mean of per-rank losses over equal
    shards is the loss of the whole batch and DDP's gradient average is exact.
    """
    elements = model(batch.inputs, batch.actions, noise, time)
    keep = (~batch.action_is_pad)[:, :, None] & batch.action_dim_mask[None, None, :]
    count = elements.shape[0] * elements.shape[1] * batch.action_dim_mask.sum()
    return (elements * keep).sum() / count


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TrainingBatch,
    noise: torch.Tensor,
    time: torch.Tensor,
    clip_norm: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update; returns (loss, gradient norm before clipping). A non-finite gradient skips the update."""
    with _autocast(batch.actions.device):
        loss = training_loss(model, batch, noise, time)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
    if bool(torch.isfinite(grad_norm)):
        optimizer.step()
    return loss.detach(), grad_norm.detach()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.AdamW:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        trainable, lr=settings.peak_lr(), betas=(0.9, 0.95), eps=1e-8, weight_decay=settings.weight_decay
    )


class Ema:
    """An exponential moving average of the trainable weights (the weights to act with)."""

    def __init__(
        self, model: nn.Module, decay: float, start: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        self.decay = decay
        self.shadow = {
            name: (start[name] if start and name in start else p.detach()).to(p.device, torch.float32).clone()
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class _Setup:
    run: Path
    config: Pi0Config
    normalizer: Normalizer
    data: DataConfig
    start_step: int
    resume_from: Path | None
    tasks: tuple[str, ...]


def train(settings: TrainSettings, say: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume) a run and return where its last checkpoint is."""
    ranks = Ranks.from_env()
    if ranks.world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _device(settings, ranks)
    try:
        return _train(settings, ranks, device, say if ranks.main else (lambda _: None))
    finally:
        if ranks.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _device(settings: TrainSettings, ranks: Ranks) -> torch.device:
    if settings.device:
        return torch.device(settings.device)
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def _train(
    settings: TrainSettings, ranks: Ranks, device: torch.device, say: Callable[[str], None]
) -> TrainResult:
    setup = _resume_setup(settings) if settings.resume else _fresh_setup(settings, ranks.main)
    if setup.start_step >= settings.steps:
        raise TrainingError(
            f"{setup.run} is already at step {setup.start_step}; give --steps above it to train further"
        )
    model = Pi0(setup.config)
    ema_start, moments = _initial_weights(settings, setup, model, say)
    for parameter in model.unused_parameters():
        parameter.requires_grad_(False)
    if settings.freeze_prefix:
        model.freeze_prefix()
    model.to(device)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    ema = Ema(model, settings.ema_decay, ema_start) if settings.ema_decay else None
    if settings.fsdp and settings.ema_decay:
        raise TrainingError("--ema with --fsdp is not supported; drop one of them")
    wrapped = wrap_model(model, ranks, device, settings.fsdp)
    optimizer = make_optimizer(wrapped, settings)
    if moments:
        restore_optimizer(optimizer, names, moments)
    tokenizer = make_tokenizer(setup.config, settings.tokenizer)
    loader = make_loader(
        settings.store,
        setup.config,
        setup.data,
        setup.normalizer,
        tokenizer,
        settings.batch_size,
        workers=settings.workers,
        seed=settings.seed + setup.start_step,
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    warmup = settings.warmup_steps if settings.warmup_steps is not None else min(1000, settings.steps // 10)
    schedule = Schedule(
        settings.peak_lr(), warmup, settings.steps, settings.peak_lr() * settings.final_lr_ratio
    )
    generator = torch.Generator(device=device).manual_seed(
        settings.seed * 1_000_003 + ranks.rank + setup.start_step
    )
    run_id = _record_run_start(settings, setup) if ranks.main else None
    if ranks.main:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        say(
            f"training {setup.config.name} ({trainable / 1e6:.1f} M trainable parameters) on {device} × "
            f"{ranks.world_size}, {len(loader) * settings.batch_size * ranks.world_size} windows a pass, "
            f"batch {settings.batch_size} per rank; "
            f"run {setup.run}"
        )
    log = LossLog(setup.run, setup.start_step) if ranks.main else None
    progress = Progress(settings.steps) if ranks.main else None
    checkpoint = setup.resume_from
    step, loss_value, nonfinite = setup.start_step, math.nan, 0
    window_start, window_steps = time.perf_counter(), 0
    status = "failed"
    with _stop_on_signals() as stop_requested:
        try:
            stream: Iterator[TrainingBatch] = batches(loader)
            wrapped.train()
            while step < settings.steps:
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr(step)
                batch = augment_batch(next(stream).to(device), setup.data, generator)
                noise = model.noise(settings.batch_size, device, generator)
                flow_time = sample_flow_time(settings.batch_size, generator, device.type)
                loss, grad_norm = train_step(wrapped, optimizer, batch, noise, flow_time, settings.clip_norm)
                nonfinite = 0 if bool(torch.isfinite(grad_norm)) else nonfinite + 1
                if nonfinite >= MAX_NONFINITE_STEPS:
                    raise TrainingError(
                        f"the loss or its gradient was not finite for {nonfinite} steps in a row at step "
                        f"{step}; lower --lr (now {settings.peak_lr():g}) or check the data's statistics"
                    )
                if ema is not None:
                    ema.update(model)
                step += 1
                window_steps += 1
                if step % settings.log_every == 0 or step == settings.steps:
                    loss_value = mean_over_ranks(loss, ranks)
                    elapsed = (time.perf_counter() - window_start) / window_steps
                    samples = settings.batch_size * ranks.world_size / elapsed
                    if log is not None and progress is not None:
                        log.append(
                            step=step, loss=loss_value, lr=schedule.lr(step - 1),
                            grad_norm=float(grad_norm), step_s=elapsed, samples_per_s=samples,
                        )  # fmt: skip
                        progress.update(step, loss_value, elapsed, samples)
                    window_start, window_steps = time.perf_counter(), 0
                if agree(stop_requested(), ranks):
                    break
                if step % settings.save_every == 0 and step < settings.steps:
                    checkpoint = _save(wrapped, model, optimizer, names, ema, setup, settings, step, ranks)
            checkpoint = _save(wrapped, model, optimizer, names, ema, setup, settings, step, ranks)
            interrupted = step < settings.steps
            status = "interrupted" if interrupted else "complete"
        finally:
            if progress is not None:
                progress.close()
            if ranks.main:
                plot_loss(setup.run)
                if run_id is not None:
                    _record_run_end(settings.store, run_id, status, checkpoint)
    assert checkpoint is not None
    if interrupted:
        say(
            f"stopped at step {step}; checkpoint {checkpoint}. Resume with: "
            f"rig train --store {settings.store} --resume --out {setup.run}"
        )
    else:
        say(f"done: step {step}, loss {loss_value:.4f}; checkpoint {checkpoint}")
    return TrainResult(setup.run, checkpoint, step, loss_value, interrupted)


def _fresh_setup(settings: TrainSettings, main: bool) -> _Setup:
    overrides = {"action_horizon": settings.action_horizon} if settings.action_horizon else {}
    config = get_config(settings.config, **overrides)
    if settings.norm_stats is not None:
        normalizer = load_openpi_norm_stats(settings.norm_stats)
    else:
        normalizer = compute_norm_stats(settings.store)
    data = DataConfig(cameras=settings.cameras, augment=settings.augment, prompt=settings.prompt)
    run = settings.out or settings.store / RUNS / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.name}"
    if main:  # one rank owns the folder (another rank could see the first checkpoint land)
        if latest_checkpoint(run) is not None:
            raise TrainingError(
                f"{run} already holds checkpoints; pass --resume to continue it or another --out"
            )
        run.mkdir(parents=True, exist_ok=True)
        (run / RUN_FILE).write_text(
            json.dumps({"store": str(settings.store), "config": config.name}, indent=1)
        )
    return _Setup(run, config, normalizer, data, 0, None, _task_texts(settings.store))


def _resume_setup(settings: TrainSettings) -> _Setup:
    run = settings.out or _latest_run(settings.store)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise TrainingError(
            f"nothing to resume in {run}: it has no complete checkpoint; train without --resume"
        )
    meta = read_meta(checkpoint)
    return _Setup(run, meta.config, meta.normalizer, meta.data, meta.step, checkpoint, meta.tasks)


def _task_texts(store: Path) -> tuple[str, ...]:
    """The task texts of the episodes trained on, most frequent first (the default prompt at run time)."""
    catalogue = Catalogue(store / CATALOGUE_FILE)
    try:
        counts = collections.Counter(e.task for e in catalogue.episodes(status="complete"))
    finally:
        catalogue.close()
    return tuple(task for task, _ in counts.most_common())


def _latest_run(store: Path) -> Path:
    runs = sorted(
        (p for p in (store / RUNS).glob("*") if latest_checkpoint(p)), key=lambda p: p.stat().st_mtime
    )
    if not runs:
        raise TrainingError(f"no run with a checkpoint under {store / RUNS}; give the run folder with --out")
    return runs[-1]


def _initial_weights(
    settings: TrainSettings, setup: _Setup, model: Pi0, say: Callable[[str], None]
) -> tuple[dict[str, torch.Tensor] | None, dict[str, dict[str, torch.Tensor]]]:
    """Fill the model: from the checkpoint being resumed, or from --init weights, or leave it random.
    Returns the EMA to start from and the optimizer moments."""
    if setup.resume_from is not None:
        state = load_train_state(setup.resume_from)
        load_pi0_weights(model, setup.resume_from / MODEL_FILE)
        saved = {name: p.detach().clone() for name, p in model.named_parameters()}
        if state.raw_weights:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in state.raw_weights:
                        p.copy_(state.raw_weights[name])
        say(f"resuming {setup.run} from step {setup.start_step}")
        return (saved if state.raw_weights else None), state.optimizer
    if settings.init is not None:
        report = load_pi0_weights(model, settings.init)
        say(f"initial weights {settings.init}: {report.summary()}")
    return None, {}


def _save(
    wrapped: nn.Module,
    model: Pi0,
    optimizer: torch.optim.Optimizer,
    names: list[str],
    ema: Ema | None,
    setup: _Setup,
    settings: TrainSettings,
    step: int,
    ranks: Ranks,
) -> Path:
    weights, moments = full_state(wrapped, optimizer)
    folder = checkpoint_dir(setup.run, step)
    if ranks.main:
        acting = dict(weights)
        if ema is not None:
            acting.update({name: t.to(weights[name].dtype) for name, t in ema.shadow.items()})
        train = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()}
        meta = CheckpointMeta(
            setup.config,
            setup.normalizer,
            setup.data,
            step,
            train,
            str(settings.tokenizer) if settings.tokenizer else None,
            setup.tasks,
        )
        raw = weights if ema is not None else {}
        save_checkpoint(folder, acting, meta, TrainState(raw, moments))
    if ranks.world_size > 1:
        dist.barrier()
    return folder


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and save) instead of dying mid-save."""
    requested = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal requested
        requested = True

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, the caller stops us otherwise
        pass
    try:
        yield lambda: requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _record_run_start(settings: TrainSettings, setup: _Setup) -> int | None:
    path = settings.store / CATALOGUE_FILE
    if not path.exists():
        return None
    catalogue = Catalogue(path)
    try:
        note = f"run {setup.run}" + (f", resumed from step {setup.start_step}" if setup.resume_from else "")
        return catalogue.start_training_run({"config": setup.config.name, "steps": settings.steps}, note)
    finally:
        catalogue.close()


def _record_run_end(store: Path, run_id: int, status: str, checkpoint: Path | None) -> None:
    catalogue = Catalogue(store / CATALOGUE_FILE)
    try:
        catalogue.finish_training_run(
            run_id, status=status, checkpoint=str(checkpoint) if checkpoint else None
        )
    finally:
        catalogue.close()
