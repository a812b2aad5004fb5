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
import os
import signal
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

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
from policy.data import augment_batch, batches, make_loader
from policy.distributed import (
    Ranks,
    agree,
    agree_steps,
    build_model,
    full_state,
    join_process_group,
    leave_process_group,
    mean_over_ranks,
    resolve_device,
    restore_optimizer,
    sharded,
    wrap_model,
)
from policy.images import AUGMENTATIONS
from policy.normalize import Normalizer, compute_norm_stats, load_openpi_norm_stats
from policy.pi0 import Pi0, sample_flow_time
from policy.precision import Precision, autocast, uses_bf16
from policy.progress import LossLog, Progress, plot_loss
from policy.tokenizer import make_tokenizer
from policy.transform import DEFAULT_VIEWS, CameraView, DataConfig, measured_image_size
from policy.weights import load_pi0_weights
from recorder.store import CATALOGUE, catalogue_of

RUN_FILE = "run.json"
COMPILE_FROM = 1000  # steps: compiling costs about a minute on a 2-core CPU and saves ~20 % a step
RUNS = "runs"
MAX_NONFINITE_STEPS = 5


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class TrainSettings:
    store: Path
    out: Path | None = None  # the run folder; default <store>/runs/<time>-<config>
    config: str = "pi0-small"
    steps: int = 1000  # with `minutes`: at most this many
    minutes: float | None = None  # a wall-clock budget: the run's length follows from its measured pace
    batch_size: int = 32  # on a CPU, 1.15-1.3x the samples/s of 8 (bf16 matmuls fill better)
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
    views: tuple[CameraView, ...] = DEFAULT_VIEWS  # what the model sees, slot by slot
    image_size: int | None = None  # vision tower's side; default: a twin preset's measured one or config's
    prompt: str | None = None
    augment: str = "shift"  # a name in policy.images.AUGMENTATIONS, or "none"
    action_horizon: int | None = None
    noise_draws: int = 1  # flow-matching draws per sample: the prefix runs once for all of them
    state_dropout: float = 0.0  # share of samples trained without the state (policy.transform.DataConfig)
    precision: Precision = "auto"  # bf16 autocast where it pays (policy.precision)
    compile: bool | None = None  # torch.compile the step; default: for runs of COMPILE_FROM steps or more
    threads: int | None = None  # torch's intra-op threads; default one per core this process may use
    resume: bool = False
    seed: int = 0
    save_every: int = 250
    log_every: int = 10
    workers: int = 0  # loader processes; frames come from the decoded-frame cache, so 0 is usually fastest
    fsdp: bool = False
    device: str | None = None  # default cuda:<local rank> when available, else cpu
    include_flagged: bool = False  # also episodes flagged faulted, idle or still (recorder/quality.py)

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


@dataclass
class TimeBudget:
    """A run that must end within a wall-clock budget, however fast this machine is and however busy.

    Its length in steps is what the measured pace allows: after `settle` steps (compilation and
    warm-up are slow), `steps_for` extrapolates from the pace so far, and the caller re-fits the
    learning-rate schedule to it, so the cosine decay still ends when the time does."""

    seconds: float
    first_step: int
    settle: int = 20
    started: float = field(default_factory=time.monotonic)
    _settled: tuple[int, float] | None = None

    def steps_for(self, step: int, most: int) -> int:
        """The run's total steps as now predicted (at most `most`)."""
        now = time.monotonic()
        if self._settled is None:
            if step - self.first_step < self.settle:
                return most
            self._settled = (step, now)
        settled_step, settled_at = self._settled
        if step == settled_step:
            pace = (now - self.started) / max(1, step - self.first_step)
        else:
            pace = (now - settled_at) / (step - settled_step)
        remaining = self.seconds - (now - self.started)
        return max(step if remaining <= 0 else step + 1, min(most, step + int(remaining / pace)))


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
    draws = elements.shape[0] // batch.actions.shape[0]
    keep = (~batch.action_is_pad).repeat_interleave(draws, dim=0)[:, :, None] & batch.action_dim_mask[
        None, None, :
    ]
    count = elements.shape[0] * elements.shape[1] * batch.action_dim_mask.sum()
    return (elements * keep).sum() / count


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: TrainingBatch,
    noise: torch.Tensor,
    time: torch.Tensor,
    clip_norm: float,
    precision: Precision = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update; returns (loss, gradient norm before clipping). A non-finite gradient skips the update:
    a fused optimizer skips it on the device (GradScaler's `found_inf`), so the host never waits for
    the step to finish; others are asked after a wait."""
    with autocast(batch.actions.device, precision):
        loss = training_loss(model, batch, noise, time)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~torch.isfinite(grad_norm)).float()  # type: ignore[attr-defined]
        optimizer.step()
        del optimizer.found_inf  # type: ignore[attr-defined]
    elif bool(torch.isfinite(grad_norm)):
        optimizer.step()
    return loss.detach(), grad_norm.detach()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = True) -> torch.optim.AdamW:
    """AdamW (β 0.9/0.95, as openpi) over the trainable weights. Fused: one kernel for every parameter's
    update instead of a dozen per tensor, on the CPU and on CUDA; DTensor parameters (FSDP) take the
    default implementation."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = fused and not any(isinstance(p, DTensor) for p in trainable)
    return torch.optim.AdamW(
        trainable, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay, fused=fused
    )


class Ema:
    """An exponential moving average of the trainable weights (the weights to act with).

    The average starts at the initial weights, so a plain decay d would keep d^t of the random
    initialization after t steps: with d = 0.999, 37 % of noise at step 1000, enough to wreck a
    short run's policy. The decay therefore warms up, min(d, (1 + t) / (10 + t)) at step t (as
    timm's and LeRobot's EMAs), which weighs early steps like a running mean."""

    def __init__(
        self, model: nn.Module, decay: float, start: Mapping[str, torch.Tensor] | None = None, step: int = 0
    ) -> None:
        self.decay, self.step = decay, step
        self.shadow = {
            name: (start[name] if start and name in start else p.detach()).to(p.device, torch.float32).clone()
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.decay_at(self.step)
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), weight)
        self.step += 1


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


OnCheckpoint = Callable[[Path, int], None]


def train(
    settings: TrainSettings, say: Callable[[str], None] = print, on_checkpoint: OnCheckpoint | None = None
) -> TrainResult:
    """Train (or resume) a run and return where its last checkpoint is. `on_checkpoint(folder, step)`
    runs on the main rank after each periodic checkpoint (an evaluation, say); training waits for it."""
    if settings.fsdp and settings.ema_decay:  # before the run folder and the model exist
        raise TrainingError("--ema with --fsdp is not supported; drop one of them")
    ranks = Ranks.from_env()
    device = resolve_device(settings.device, ranks)
    join_process_group(ranks, device)
    try:
        hook = on_checkpoint if ranks.main else None
        return _train(settings, ranks, device, say if ranks.main else (lambda _: None), hook)
    finally:
        leave_process_group(ranks)


def _train(
    settings: TrainSettings,
    ranks: Ranks,
    device: torch.device,
    say: Callable[[str], None],
    on_checkpoint: OnCheckpoint | None,
) -> TrainResult:
    setup = _resume_setup(settings) if settings.resume else _fresh_setup(settings, ranks.main)
    if setup.start_step >= settings.steps:
        raise TrainingError(
            f"{setup.run} is already at step {setup.start_step}; give --steps above it to train further"
        )
    # Sharded, only the main rank holds the full weights (from the seed, --init or the checkpoint);
    # every rank's model is built on `meta` and receives its shards from them.
    sharding = sharded(ranks, settings.fsdp)
    model = build_model(setup.config, settings.seed, "meta" if sharding else "cpu")
    filled = build_model(setup.config, settings.seed) if sharding and ranks.main else model
    receives = sharding and not ranks.main
    ema_start, moments = (None, {}) if receives else _initial_weights(settings, setup, filled, say)
    for parameter in model.unused_parameters():
        parameter.requires_grad_(False)
    if settings.freeze_prefix:
        model.freeze_prefix()
    if not sharding:
        model.to(device)
    if device.type == "cpu":
        torch.set_num_threads(settings.threads or len(os.sched_getaffinity(0)))
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    ema = Ema(model, settings.ema_decay, ema_start, setup.start_step) if settings.ema_decay else None
    full_weights = filled.state_dict() if sharding and ranks.main else None
    bf16 = uses_bf16(device, settings.precision)
    wrapped = wrap_model(model, ranks, device, settings.fsdp, bf16, full_weights)
    del filled, full_weights
    optimizer = make_optimizer(wrapped, settings.peak_lr(), settings.weight_decay)
    if setup.resume_from is not None:
        restore_optimizer(wrapped, optimizer, names, moments, ranks)
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
        say=say,
        include_flagged=settings.include_flagged,
        pin_memory=device.type == "cuda",
    )
    compiled = compile_model(
        wrapped, settings.compile if settings.compile is not None else settings.steps >= COMPILE_FROM
    )
    draws = settings.noise_draws
    warmup = settings.warmup_steps if settings.warmup_steps is not None else min(1000, settings.steps // 10)
    schedule = Schedule(
        settings.peak_lr(), warmup, settings.steps, settings.peak_lr() * settings.final_lr_ratio
    )
    budget = TimeBudget(60 * settings.minutes, setup.start_step) if settings.minutes else None
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
    step, loss_value = setup.start_step, math.nan
    nonfinite = longest_nonfinite = torch.zeros((), dtype=torch.long, device=device)  # counted on the device
    window_start, window_steps = time.perf_counter(), 0
    status = "failed"
    with _stop_on_signals() as stop_requested:
        try:
            stream: Iterator[TrainingBatch] = batches(loader)
            wrapped.train()
            while step < schedule.total:
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr(step)
                batch = augment_batch(next(stream).to(device), setup.data, generator)
                noise = model.noise(settings.batch_size * draws, device, generator)
                flow_time = sample_flow_time(settings.batch_size * draws, generator, device)
                loss, grad_norm = train_step(
                    compiled, optimizer, batch, noise, flow_time, settings.clip_norm, settings.precision
                )
                nonfinite = torch.where(torch.isfinite(grad_norm), 0, nonfinite + 1)
                longest_nonfinite = torch.maximum(longest_nonfinite, nonfinite)
                if ema is not None:
                    ema.update(model)
                step += 1
                window_steps += 1
                if progress is not None:
                    progress.advance(step)
                if budget is not None and step % 10 == 0:
                    total = agree_steps(budget.steps_for(step, settings.steps), ranks)
                    schedule = dataclasses.replace(schedule, total=total, warmup=min(warmup, total // 10))
                    if progress is not None:
                        progress.total = total
                if step % settings.log_every == 0 or step == schedule.total:  # the host waits here only
                    if int(longest_nonfinite) >= MAX_NONFINITE_STEPS:
                        raise TrainingError(
                            f"the loss or its gradient was not finite for {int(longest_nonfinite)} steps in "
                            f"a row by step {step}; lower --lr (now {settings.peak_lr():g}) or check the "
                            "data's statistics"
                        )
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
                if step % settings.save_every == 0 and step < schedule.total:
                    checkpoint = _save(wrapped, optimizer, ema, setup, settings, step, ranks)
                    if on_checkpoint is not None:
                        on_checkpoint(checkpoint, step)
                    if ranks.world_size > 1:
                        dist.barrier()  # the other ranks wait for the main rank's hook
            checkpoint = _save(wrapped, optimizer, ema, setup, settings, step, ranks)
            interrupted = step < schedule.total
            if on_checkpoint is not None and not interrupted:
                on_checkpoint(checkpoint, step)
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
        peak = ""
        if device.type == "cuda":
            peak = f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
        say(f"done: step {step}, loss {loss_value:.4f}{peak}; checkpoint {checkpoint}")
    return TrainResult(setup.run, checkpoint, step, loss_value, interrupted)


def compile_model(model: nn.Module, wanted: bool) -> nn.Module:
    """The model under torch.compile (the same module to the caller: forward is compiled), or as is."""
    return typing.cast(nn.Module, torch.compile(model)) if wanted else model


def _data_config(settings: TrainSettings) -> DataConfig:
    if settings.augment != "none" and settings.augment not in AUGMENTATIONS:
        raise TrainingError(
            f"unknown augmentation {settings.augment!r}; known: {', '.join(AUGMENTATIONS)}, none"
        )
    return DataConfig(
        views=settings.views,
        augment=settings.augment != "none",
        augmentation=AUGMENTATIONS.get(settings.augment, AUGMENTATIONS["color"]),
        prompt=settings.prompt,
        state_dropout=settings.state_dropout,
    )


def _fresh_setup(settings: TrainSettings, main: bool) -> _Setup:
    config = get_config(settings.config)
    if settings.action_horizon:
        config = dataclasses.replace(config, action_horizon=settings.action_horizon)
    image_size = settings.image_size
    if image_size is None and settings.init is None:  # published weights keep their size
        image_size = measured_image_size(settings.views, config.vision.image_size)
    if image_size != config.vision.image_size and image_size is not None:
        try:
            config = dataclasses.replace(
                config, vision=dataclasses.replace(config.vision, image_size=image_size)
            )
        except ValueError as error:
            raise TrainingError(f"--image-size {image_size}: {error}") from None
    if settings.norm_stats is not None:
        normalizer = load_openpi_norm_stats(settings.norm_stats)
    else:
        normalizer = compute_norm_stats(settings.store, include_flagged=settings.include_flagged)
    data = _data_config(settings)
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
    run, checkpoint = _run_to_resume(settings.store, settings.out)
    meta = read_meta(checkpoint)
    return _Setup(run, meta.config, meta.normalizer, meta.data, meta.step, checkpoint, meta.tasks)


def _run_to_resume(store: Path, out: Path | None) -> tuple[Path, Path]:
    """The run folder to continue (`out`, else the store's newest) and its newest checkpoint."""
    run = out or _latest_run(store)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise TrainingError(
            f"nothing to resume in {run}: it has no complete checkpoint; train without --resume"
        )
    return run, checkpoint


# What a run does not keep when resumed: where it is, and this machine's share of the work.
NOT_RESUMED = frozenset({"store", "out", "resume", "device", "threads", "workers", "fsdp", "views"})


def resume_settings(store: Path, out: Path | None = None, **given: Any) -> TrainSettings:
    """The settings that continue a run: its own (its newest checkpoint keeps them) except those
    `given` explicitly, so that a run started with `--steps 300` resumes to 300, not to the default."""
    run, checkpoint = _run_to_resume(store, out)
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    kept = {
        name: Path(value) if value is not None and "Path" in str(fields[name].type) else value
        for name, value in read_meta(checkpoint).train.items()
        if name in fields and name not in NOT_RESUMED
    }
    return TrainSettings(**{**kept, **given, "store": store, "out": run, "resume": True})


def _task_texts(store: Path) -> tuple[str, ...]:
    """The task texts of the episodes trained on, most frequent first (the default prompt at run time)."""
    with catalogue_of(store) as catalogue:
        counts = collections.Counter(e.task for e in catalogue.episodes(status="complete"))
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
    optimizer: torch.optim.Optimizer,
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
    if not (settings.store / CATALOGUE).exists():
        return None
    with catalogue_of(settings.store) as catalogue:
        note = f"run {setup.run}" + (f", resumed from step {setup.start_step}" if setup.resume_from else "")
        return catalogue.start_training_run({"config": setup.config.name, "steps": settings.steps}, note)


def _record_run_end(store: Path, run_id: int, status: str, checkpoint: Path | None) -> None:
    with catalogue_of(store) as catalogue:
        catalogue.finish_training_run(
            run_id, status=status, checkpoint=str(checkpoint) if checkpoint else None
        )
