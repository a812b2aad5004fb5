"""`rig bench policy`: how big π0 is, how long one action chunk takes, and how fast it trains.

A chunk's latency is split where inference splits: the prefix (vision + prompt through the language
model, once per chunk) and the denoising (the action expert's Euler steps against the cached prefix).
Weights are random: timings do not depend on their values. The published size is refused on a CPU
unless asked for, since it needs ~13 GB of fp32 weights and minutes per chunk there; its parameter
count comes from a model built on the `meta` device, which allocates nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from policy.batch import Pi0Inputs, TrainingBatch
from policy.config import Pi0Config, get_config
from policy.fast_inference import keeps_bf16_weights, to_bf16_for_inference
from policy.pi0 import Pi0, PrefixCache, sample_flow_time
from policy.precision import Precision, autocast, uses_bf16
from policy.train import TrainSettings
from policy.transform import DEFAULT_VIEWS, measured_image_size

Dtype = Literal["fp32", "bf16", "bf16-weights"]
DTYPES: tuple[Dtype, ...] = ("fp32", "bf16", "bf16-weights")
CPU_PARAMETER_LIMIT = 1_000_000_000  # beyond this, a CPU run needs --allow-slow
PROMPT_TOKENS = 16
FP32_BYTES = 4
TRAINING_BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and AdamW's two moments
DTYPE_WORDS: dict[Dtype, str] = {
    "fp32": "fp32",
    "bf16": "bf16 autocast, fp32 weights",
    "bf16-weights": "bf16 weights (norms, vision embeddings fp32) under autocast; training fp32 weights",
}
T = TypeVar("T")


class BenchRefused(ValueError):
    """The asked-for run would take far too long or too much memory here; the message says why."""


@dataclass(frozen=True)
class PolicyBenchSettings:
    config: str = "pi0-small"
    cameras: int = len(DEFAULT_VIEWS)  # image slots; rig train's default views
    image_size: int | None = None  # None: rig train's for its default views (pi0: its published 224)
    batch: int = 1
    repeats: int = 10
    warmup: int = 2
    train_batch: int = TrainSettings.batch_size  # 0: no training figure
    train_steps: int = 3
    compile: bool = True  # in the default recipe, as rig train compiles a long run
    device: str | None = None  # None: CUDA when there is one, else the CPU
    dtype: Dtype | None = None  # None: bf16 where it is fast (policy.precision), else fp32
    allow_slow: bool = False
    params_only: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("cameras", "batch", "repeats", "train_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0 or self.train_batch < 0:
            raise ValueError("warmup and train-batch cannot be negative")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")


@dataclass(frozen=True)
class ParameterCount:
    total: int
    parts: tuple[tuple[str, int], ...]  # (part, count), summing to total
    token_embeddings: int  # inside the language part; most of it at vocabulary 257k


@dataclass(frozen=True)
class Timing:
    median_s: float
    p99_s: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        return cls(float(np.median(samples)), float(np.percentile(samples, 99)))


@dataclass(frozen=True)
class ChunkLatency:
    prefix: Timing
    denoising: Timing
    total: Timing
    peak_memory_bytes: int | None  # CUDA only


@dataclass(frozen=True)
class Recipe:
    """How a training step is run: what `rig train` does by default, or the plain baseline."""

    name: str
    precision: Precision
    compile: bool
    fused_optimizer: bool


PLAIN = Recipe("plain fp32 eager step", "fp32", False, False)


@dataclass(frozen=True)
class TrainThroughput:
    recipe: Recipe
    samples_per_s: float
    samples_per_cpu_s: float  # per second of this process's CPU time, all threads together
    step_s: float
    gflop_per_cpu_s: float  # the step's floating-point work per CPU-second
    peak_memory_bytes: int | None  # CUDA only


@dataclass(frozen=True)
class MatmulRate:
    """A 1024² matrix product on the same threads, the ceiling a step's matmuls can approach."""

    fp32_gflop_per_cpu_s: float
    bf16_gflop_per_cpu_s: float


@dataclass(frozen=True)
class PolicyBenchReport:
    settings: PolicyBenchSettings
    config: Pi0Config
    device: str  # in words: CPU threads or the GPU's name
    dtype: str  # what ran, with the reason where it differs from what was asked
    params: ParameterCount
    chunk: ChunkLatency | None  # None with params_only
    train: tuple[TrainThroughput, ...] = ()  # rig train's default recipe, then the plain baseline
    matmul: MatmulRate | None = None

    def __str__(self) -> str:
        s, c = self.settings, self.config
        where = "parameters only" if s.params_only else f"on {self.device}, {self.dtype}"
        lines = [f"π0 bench: {c.name}, {where}", f"parameters      {_count(self.params.total):>9}"]
        lines += [f"  {part:<14}{_count(count):>9}" for part, count in self.params.parts]
        tokens = _count(self.params.token_embeddings)
        lines.append(f"  (the language part holds {tokens} of token embeddings)")
        if self.chunk is not None:
            size = c.vision.image_size
            prompt = min(PROMPT_TOKENS, c.max_token_len)
            lines += [
                f"chunk of {c.action_horizon} actions: batch {s.batch}, "
                f"{s.cameras} cameras of {size}×{size}, "
                f"{prompt} prompt tokens, {c.num_steps} denoising steps; "
                f"{s.repeats} runs after {s.warmup} warm-up",
                f"  prefix     {_timing(self.chunk.prefix)}",
                f"  denoising  {_timing(self.chunk.denoising)}  "
                f"({1e3 * self.chunk.denoising.median_s / c.num_steps:.2f} ms per step)",
                f"  total      {_timing(self.chunk.total)}",
            ]
            lines += _memory(self.chunk.peak_memory_bytes)
        if self.train:
            lines.append(
                f"training (loss, backward, AdamW): batch {s.train_batch}, {s.cameras} cameras, "
                f"{s.train_steps} steps after 2 warm-up"
            )
            for run in self.train:
                lines.append(
                    f"  {run.recipe.name:<34} {run.samples_per_cpu_s:7.2f} samples per CPU-s "
                    f"({run.samples_per_s:.2f}/s, {run.step_s:.3f} s a step), "
                    f"{run.gflop_per_cpu_s:.0f} GFLOP per CPU-s"
                )
                lines += _memory(run.peak_memory_bytes)
            if len(self.train) == 2:
                ratio = self.train[0].samples_per_cpu_s / self.train[1].samples_per_cpu_s
                lines.append(f"  training speed-up {ratio:.1f}×")
        if self.matmul is not None:
            lines.append(
                f"matmul 1024² on the same threads: fp32 {self.matmul.fp32_gflop_per_cpu_s:.0f}, "
                f"bf16 {self.matmul.bf16_gflop_per_cpu_s:.0f} GFLOP per CPU-s"
            )
        return "\n".join(lines)


def bench_policy(settings: PolicyBenchSettings) -> PolicyBenchReport:
    """Count on `meta` first, so that a refused run has cost nothing; then time one fresh model."""
    config = get_config(settings.config)
    size = settings.image_size or config.vision.image_size
    if settings.image_size is None and config.tokenizer == "bytes":  # trained from scratch, as rig train does
        size = measured_image_size(DEFAULT_VIEWS, size)
    config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, image_size=size))
    with torch.device("meta"):
        params = count_parameters(Pi0(config))
    if settings.params_only:
        return PolicyBenchReport(settings, config, "meta", "-", params, None)
    device = _device(settings.device)
    _refuse_slow_cpu(settings, device, params.total)
    dtype, note = _dtype(settings.dtype, device)
    torch.manual_seed(settings.seed)
    with torch.device(device):
        model = Pi0(config)
    chunk = _chunk_latency(model, settings, device, dtype)
    train: tuple[TrainThroughput, ...] = ()
    if settings.train_batch:
        default = Recipe("rig train's defaults", TrainSettings.precision, settings.compile, True)
        default = dataclasses.replace(default, name=_recipe_words(default, device))
        train = tuple(_train_throughput(config, settings, device, recipe) for recipe in (default, PLAIN))
    matmul = _matmul_rate(device) if device.type == "cpu" else None
    return PolicyBenchReport(
        settings, config, _describe(device), DTYPE_WORDS[dtype] + note, params, chunk, train, matmul
    )


def count_parameters(model: Pi0) -> ParameterCount:
    """Per top-level part; every linear layer between the parts counts as a projection."""
    names = {"vision": "vision", "language": "language", "expert": "action expert"}
    parts = dict.fromkeys([*names.values(), "projections"], 0)
    for name, child in model.named_children():
        parts[names.get(name, "projections")] += sum(p.numel() for p in child.parameters())
    embeddings = model.language.embed_tokens
    tokens = 0 if embeddings is None else embeddings.weight.numel()
    return ParameterCount(sum(parts.values()), tuple(parts.items()), tokens)


def random_inputs(config: Pi0Config, batch: int, cameras: int, generator: torch.Generator) -> Pi0Inputs:
    """Random images at the config's size and a prompt of PROMPT_TOKENS real tokens (fewer if it is short)."""
    size, length = config.vision.image_size, config.max_token_len
    return Pi0Inputs(
        images=torch.rand(batch, cameras, 3, size, size, generator=generator) * 2 - 1,
        image_masks=torch.ones(batch, cameras, dtype=torch.bool),
        tokens=torch.randint(3, config.vocab_size, (batch, length), generator=generator),
        token_masks=(torch.arange(length) < PROMPT_TOKENS)[None].expand(batch, -1),
        state=torch.randn(batch, config.action_dim, generator=generator),
    ).without_trailing_padding()  # as training's batches come (policy.data.collate)


def _chunk_latency(
    model: Pi0, settings: PolicyBenchSettings, device: torch.device, dtype: str
) -> ChunkLatency:
    generator = torch.Generator().manual_seed(settings.seed)
    inputs = random_inputs(model.config, settings.batch, settings.cameras, generator).to(device)
    noise = model.noise(settings.batch, "cpu", generator).to(device)
    model.eval()
    if dtype == "bf16-weights":
        to_bf16_for_inference(model)
    _reset_peak_memory(device)
    prefix, denoising = [], []
    with torch.inference_mode(), _autocast(model, dtype):
        for run in range(settings.warmup + settings.repeats):
            cache, prefix_s = _timed(device, lambda: model.prefix_cache(inputs))
            _, denoising_s = _timed(device, functools.partial(_denoise, model, cache, inputs.state, noise))
            if run >= settings.warmup:
                prefix.append(prefix_s)
                denoising.append(denoising_s)
    total = [a + b for a, b in zip(prefix, denoising, strict=True)]
    memory = _peak_memory(device)
    if dtype == "bf16-weights":
        model.float()  # training keeps fp32 weights; the values are random anyway
    return ChunkLatency(Timing.of(prefix), Timing.of(denoising), Timing.of(total), memory)


def _denoise(model: Pi0, cache: PrefixCache, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Euler steps from t = 1 to t = 0, as Pi0.sample_actions takes them after its prefix."""
    steps = model.config.num_steps
    x, dt = noise, -1.0 / steps
    for step in range(steps):
        t = torch.full((x.shape[0],), 1.0 + step * dt, device=x.device)
        x = x + dt * model.denoise_step(cache, state, x, t)
    return x


def _recipe_words(recipe: Recipe, device: torch.device) -> str:
    parts = ["bf16 autocast" if uses_bf16(device, recipe.precision) else "fp32"]
    parts += ["compiled"] if recipe.compile else []
    parts += ["fused AdamW"] if recipe.fused_optimizer else []
    return "default: " + ", ".join(parts)


def _train_throughput(
    config: Pi0Config, settings: PolicyBenchSettings, device: torch.device, recipe: Recipe
) -> TrainThroughput:
    """`rig train`'s own step (policy.train.train_step) on random data, timed in wall and CPU time."""
    from policy.train import compile_model, make_optimizer, train_step

    torch.manual_seed(settings.seed)
    with torch.device(device):
        model = Pi0(config)
    for parameter in model.unused_parameters():
        parameter.requires_grad_(False)
    batch = settings.train_batch
    generator = torch.Generator().manual_seed(settings.seed + 1)
    inputs = random_inputs(config, batch, settings.cameras, generator)
    actions = torch.randn(batch, config.action_horizon, config.action_dim, generator=generator)
    data = TrainingBatch(
        inputs,
        actions,
        torch.zeros(batch, config.action_horizon, dtype=torch.bool),
        torch.arange(config.action_dim) < 14,
    ).to(device)
    noise = torch.randn(actions.shape, generator=generator).to(device)
    model.train()
    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.0, fused=recipe.fused_optimizer)
    stepped = compile_model(model, recipe.compile)

    def steps(count: int) -> None:
        for _ in range(count):
            time = sample_flow_time(batch, generator).to(device)
            train_step(stepped, optimizer, data, noise, time, 1.0, recipe.precision)

    _timed(device, lambda: steps(2))  # warm-up: compilation, kernel choice, AdamW's moments
    flops = _step_flops(model, data, noise, recipe, device)
    _reset_peak_memory(device)
    cpu_start = time.process_time()
    _, elapsed = _timed(device, lambda: steps(settings.train_steps))
    cpu_s = time.process_time() - cpu_start
    per_step = elapsed / settings.train_steps
    return TrainThroughput(
        recipe,
        batch / per_step,
        batch * settings.train_steps / cpu_s,
        per_step,
        flops * settings.train_steps / cpu_s / 1e9,
        _peak_memory(device),
    )


def _step_flops(
    model: Pi0, data: TrainingBatch, noise: torch.Tensor, recipe: Recipe, device: torch.device
) -> float:
    """Floating-point operations of one forward and backward pass, counted by torch (matmuls and
    attention; the elementwise rest is small beside them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from policy.train import training_loss

    time = sample_flow_time(data.inputs.batch_size, torch.Generator().manual_seed(0)).to(device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, recipe.precision):
            loss = training_loss(model, data, noise, time)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _matmul_rate(device: torch.device, size: int = 1024, repeats: int = 5) -> MatmulRate:
    rates = []
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        torch.mm(a, b)
        start = time.process_time()
        for _ in range(repeats):
            torch.mm(a, b)
        rates.append(2 * size**3 * repeats / (time.process_time() - start) / 1e9)
    return MatmulRate(rates[0], rates[1])


def _timed(device: torch.device, work: Callable[[], T]) -> tuple[T, float]:
    """The result and the seconds it took; on CUDA the queued kernels count, not only their launch."""
    _synchronize(device)
    start = time.perf_counter()
    result = work()
    _synchronize(device)
    return result, time.perf_counter() - start


def _autocast(model: Pi0, dtype: str) -> contextlib.AbstractContextManager[object]:
    device = next(model.parameters()).device
    return contextlib.nullcontext() if dtype == "fp32" else autocast(device, "bf16")


def _device(asked: str | None) -> torch.device:
    if asked is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(asked)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchRefused("--device cuda: this machine has no CUDA device (or torch is a CPU build)")
    return device


def _dtype(asked: Dtype | None, device: torch.device) -> tuple[Dtype, str]:
    """What runs, and a note when it is not what was asked for. By default what inference runs:
    bf16 weights where bf16 is fast (policy.fast_inference.prepare_for_inference), else fp32."""
    if asked is not None:
        return asked, ""
    return ("bf16-weights" if keeps_bf16_weights(device) else "fp32"), ""


def _refuse_slow_cpu(settings: PolicyBenchSettings, device: torch.device, parameters: int) -> None:
    if device.type != "cpu" or parameters <= CPU_PARAMETER_LIMIT or settings.allow_slow:
        return
    raise BenchRefused(
        f"{settings.config} has {_count(parameters)} parameters: on this CPU that is "
        f"{parameters * FP32_BYTES / 1e9:.0f} GB of fp32 weights and minutes per chunk "
        f"({parameters * TRAINING_BYTES_PER_PARAMETER / 1e9:.0f} GB to train); "
        "use --params-only for the count, or --allow-slow (with --train-batch 0) to run it anyway"
    )


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"CPU ({torch.get_num_threads()} threads, {platform.machine()})"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _memory(peak: int | None) -> Iterator[str]:
    if peak is not None:
        yield f"  peak GPU memory {peak / 2**30:.2f} GiB"


def _timing(timing: Timing) -> str:
    return f"median {1e3 * timing.median_s:9.2f} ms   p99 {1e3 * timing.p99_s:9.2f} ms"


def _count(count: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return str(count)
