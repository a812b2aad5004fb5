"""Which number format π0 computes in, decided by measuring the machine rather than by its name.

bf16 autocast halves the bytes and, where the hardware multiplies bf16 natively (CUDA tensor cores,
Intel AMX), runs matrix products several times faster: on this project's 2-core AMX CPU a bf16
matmul reaches ~1200 GFLOP per core-second against ~150 in fp32, and a pi0-small training step is
~1.5× faster. A CPU without such units emulates bf16 and gets slower, so on the CPU autocast is used
only when a short probe finds bf16 matmuls clearly faster. Norms, the vision embeddings and the
loss stay fp32 by construction (see policy.gemma and policy.siglip).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Literal

import torch

Precision = Literal["auto", "bf16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("auto", "bf16", "fp32")
PROBE_SIZE = 384
PROBE_SPEEDUP = 1.5  # bf16 must beat fp32 by this much to be worth its rounding on a CPU


def _matmul_seconds(dtype: torch.dtype, repeats: int = 8) -> float:
    a = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    b = torch.randn(PROBE_SIZE, PROBE_SIZE).to(dtype)
    torch.mm(a, b)  # first call: kernel selection, not timed
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_bf16_speedup() -> float:
    """How much faster a bf16 matmul is than an fp32 one on this CPU (measured once per process)."""
    return _matmul_seconds(torch.float32) / _matmul_seconds(torch.bfloat16)


def uses_bf16(device: torch.device, precision: Precision = "auto") -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_bf16_speedup() >= PROBE_SPEEDUP


def autocast(
    device: torch.device, precision: Precision = "auto"
) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast where it pays (see the module docstring), else nothing."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
