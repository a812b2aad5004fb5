"""What makes one π0 chunk fast on a GPU, applied once to a model that only acts.

A chunk is the prefix (cameras + prompt, once: `Pi0.prefix_cache` keeps its keys and values) and
ten denoising steps of the action expert against them. At full size each step reads the expert's
weights and the cached keys/values and launches a few hundred small kernels, so a step is bound
by bytes and launches, not by arithmetic. Two things address them:
- bf16 weights (norms and the vision embeddings kept fp32, as openpi does): half the bytes read;
- the denoising step compiled: Inductor fuses its element-wise work, and on CUDA the step is
  replayed as one CUDA graph (`reduce-overhead`), ten graph launches a chunk instead of thousands
  of kernel launches. The first chunk compiles (about a minute at full size): `warm_up` first.
Masked attention runs on a fused kernel through `policy.gemma.grouped_attention`.
"""

from __future__ import annotations

import torch
from torch import nn

from policy.batch import Pi0Inputs
from policy.gemma import RMSNorm
from policy.pi0 import Pi0
from policy.precision import uses_bf16


def to_bf16_for_inference(model: Pi0) -> None:
    """bf16 weights everywhere but the norms and the vision embeddings, which see raw pixels (as openpi)."""
    kept = {id(p) for m in model.modules() if isinstance(m, RMSNorm | nn.LayerNorm) for p in m.parameters()}
    kept |= {id(p) for p in model.vision.embeddings.parameters()}
    for parameter in model.parameters():
        if id(parameter) not in kept:
            parameter.data = parameter.data.to(torch.bfloat16)


def compile_denoiser(model: Pi0) -> None:
    """Compile the model's denoising step in place (sampling, guided sampling and the server use it):
    on CUDA with CUDA graphs, elsewhere fused kernels only."""
    device = next(model.parameters()).device
    mode = "reduce-overhead" if device.type == "cuda" else None
    model.denoise_step = torch.compile(model.denoise_step, mode=mode, dynamic=False)  # type: ignore[method-assign]


def keeps_bf16_weights(device: torch.device) -> bool:
    """Whether inference on `device` runs with bf16 weights (`prepare_for_inference`)."""
    return uses_bf16(device)


def prepare_for_inference(model: Pi0, compile: bool = False) -> Pi0:
    """bf16 weights where the model runs under bf16 autocast (CUDA; a CPU whose probe finds bf16
    fast): autocast would otherwise cast every weight again in each of a chunk's eleven passes
    (`rig bench policy`, pi0-small on this AMX CPU, 1 thread: 65 → 54 ms a chunk). Optionally the compiled
    denoising step; the model in eval mode."""
    if keeps_bf16_weights(next(model.parameters()).device):
        to_bf16_for_inference(model)
    if compile:
        compile_denoiser(model)
    return model.eval()


def blank_inputs(model: Pi0, cameras: int, batch: int = 1) -> Pi0Inputs:
    """Inputs of the shapes the model will be asked about, for a warm-up (values do not matter)."""
    config, device = model.config, next(model.parameters()).device
    size, length = config.vision.image_size, config.max_token_len
    return Pi0Inputs(
        images=torch.zeros(batch, cameras, 3, size, size, device=device),
        image_masks=torch.ones(batch, cameras, dtype=torch.bool, device=device),
        tokens=torch.zeros(batch, length, dtype=torch.long, device=device),
        token_masks=torch.ones(batch, length, dtype=torch.bool, device=device),
        state=torch.zeros(batch, config.action_dim, device=device),
    )
