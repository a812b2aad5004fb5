"""The full-size figures of benchmarks/gpu_check.sh that no `rig` command prints: one π0 chunk on the
inference fast path (policy.fast_inference), which attention kernel SDPA ran, and a few training
steps of the full model from a random init.

    python benchmarks/gpu_figures.py --config pi0 --device cuda

Every figure is one `key value` line, so the check can quote it; a stage that fails prints
`<stage> FAIL <why>` and the script goes on to the next one.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from policy.batch import TrainingBatch
from policy.bench import random_inputs
from policy.config import get_config
from policy.fast_inference import compile_denoiser, to_bf16_for_inference
from policy.pi0 import Pi0, PrefixCache, sample_flow_time
from policy.precision import autocast
from policy.train import make_optimizer, train_step

ANCHORS_MS = {"seed implementation, RTX 4090": 73.0, "tuned implementation": 39.0}
KERNELS = {  # SDPA's aten ops, by the kernel each stands for
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_fused_attention_overrideable": "fused (backend)",
    "_scaled_dot_product_attention_math": "math (unfused)",
}


@dataclass(frozen=True)
class Figures:
    config: str
    device: torch.device
    cameras: int
    repeats: int
    train_steps: int
    train_batch: int


def say(key: str, value: str) -> None:
    print(f"{key} {value}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(device: torch.device, work: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of `work` over `repeats` runs after one untimed run."""
    work()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
        samples.append(1e3 * (time.perf_counter() - start))
    return statistics.median(samples)


def peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def attention_kernels(device: torch.device, work: Callable[[], object]) -> str:
    """The SDPA kernels `work` ran, read from the profiler's aten op names."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
        synchronize(device)
    ran = {event.key.removeprefix("aten::") for event in prof.key_averages()}
    found = [words for op, words in KERNELS.items() if op in ran]
    return ", ".join(found) or "none recognised"


def random_model(config: str, device: torch.device) -> Pi0:
    """Built where it runs: initializing 3 B parameters on a CPU first takes minutes."""
    torch.manual_seed(0)
    with torch.device(device):
        return Pi0(get_config(config))


def denoise(model: Pi0, cache: PrefixCache, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    x, dt = noise, -1.0 / model.config.num_steps
    for step in range(model.config.num_steps):
        t = torch.full((x.shape[0],), 1.0 + step * dt, device=x.device)
        x = x + dt * model.denoise_step(cache, state, x, t)
    return x


def chunk_latency(figures: Figures) -> None:
    """Prefix and denoising of one chunk, bf16 weights under autocast: eager, then the denoising step
    compiled (CUDA graphs on a GPU), as `rig serve --compile` runs it."""
    device = figures.device
    model = random_model(figures.config, device).eval()
    to_bf16_for_inference(model)
    generator = torch.Generator().manual_seed(0)
    inputs = random_inputs(model.config, 1, figures.cameras, generator).to(device)
    noise = model.noise(1, "cpu", generator).to(device)
    with torch.inference_mode(), autocast(device, "bf16"):
        prefix_ms = timed_ms(device, lambda: model.prefix_cache(inputs), figures.repeats)
        cache = model.prefix_cache(inputs)
        eager_ms = timed_ms(device, lambda: denoise(model, cache, inputs.state, noise), figures.repeats)
        say("attention_kernel_prefix", attention_kernels(device, lambda: model.prefix_cache(inputs)))
        say("attention_kernel_denoise", attention_kernels(device, lambda: model.denoise_step(
            cache, inputs.state, noise, torch.ones(1, device=device))))  # fmt: skip
        say("chunk_prefix_ms", f"{prefix_ms:.1f}")
        say("chunk_denoise_eager_ms", f"{eager_ms:.1f} (10 steps)")
        say("chunk_total_eager_ms", f"{prefix_ms + eager_ms:.1f}")
        started = time.perf_counter()
        compile_denoiser(model)
        for _ in range(3):  # compile, then record and replay the CUDA graph
            denoise(model, cache, inputs.state, noise)
        synchronize(device)
        say("compile_s", f"{time.perf_counter() - started:.0f}")
        compiled_ms = timed_ms(device, lambda: denoise(model, cache, inputs.state, noise), figures.repeats)
    total = prefix_ms + compiled_ms
    say("chunk_denoise_compiled_ms", f"{compiled_ms:.1f} (10 steps)")
    say("chunk_total_compiled_ms", f"{total:.1f}")
    for name, anchor in ANCHORS_MS.items():
        if model.config.name != "pi0" or device.type != "cuda":  # the anchors are the full π0 on a GPU
            say("chunk_vs_anchor", f"n/a ({anchor:.0f} ms, {name}: the full pi0 on a GPU)")
            continue
        verdict = "beats" if total < anchor else "does not beat"
        say("chunk_vs_anchor", f"{verdict} {anchor:.0f} ms ({name})")
    say("chunk_peak_memory", peak_gib(device))


def training_steps(figures: Figures) -> None:
    """A few of `rig train`'s steps (bf16 autocast, fused AdamW) on random data, from a random init."""
    device, config = figures.device, get_config(figures.config)
    model = random_model(figures.config, device)
    for parameter in model.unused_parameters():
        parameter.requires_grad_(False)
    batch = figures.train_batch
    generator = torch.Generator().manual_seed(1)
    actions = torch.randn(batch, config.action_horizon, config.action_dim, generator=generator)
    data = TrainingBatch(
        random_inputs(config, batch, figures.cameras, generator),
        actions,
        torch.zeros(batch, config.action_horizon, dtype=torch.bool),
        torch.arange(config.action_dim) < 14,
    ).to(device)
    noise = torch.randn(actions.shape, generator=generator).to(device)
    optimizer = make_optimizer(model, lr=1e-5, weight_decay=1e-10)
    losses: list[float] = []

    def step() -> None:
        flow_time = sample_flow_time(batch, generator).to(device)
        loss, _ = train_step(model, optimizer, data, noise, flow_time, 1.0, "bf16")
        losses.append(float(loss))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_ms = timed_ms(device, step, figures.train_steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        "train_steps",
        f"{figures.train_steps} after 1 warm-up, batch {batch}, {trainable / 1e9:.2f} B trainable",
    )
    say("train_s_per_step", f"{step_ms / 1e3:.3f}")
    say("train_peak_memory", peak_gib(device))
    say("train_loss", " ".join(f"{loss:.3f}" for loss in losses))
    if not all(map(math.isfinite, losses)):
        raise RuntimeError("a non-finite loss")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pi0")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    figures = Figures(args.config, device, args.cameras, args.repeats, args.train_steps, args.train_batch)
    say("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU")
    failed = 0
    for name, stage in (("chunk", chunk_latency), ("train", training_steps)):
        try:
            stage(figures)
            say(name, "PASS")
        except Exception as error:  # each stage reports and the next one still runs
            say(name, f"FAIL {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            failed += 1
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
