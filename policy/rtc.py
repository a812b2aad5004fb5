"""Real-time chunking (Black, Galliker, Levine 2025): inpaint a new chunk so it continues the old one.

While the model computes chunk n+1, the robot keeps executing chunk n. When n+1 arrives, its first
`frozen` actions have already been executed from chunk n, and switching to an unrelated plan would
jerk the arms. RTC samples chunk n+1 with flow-matching guidance toward chunk n's remaining actions,
weighted by a soft mask: 1 on the frozen steps, fading exponentially, 0 from `horizon - execute` on.

Time convention. The paper's τ runs from 0 (noise) to 1 (data); openpi's t = 1 − τ runs from 1
(noise) to 0 (data) and its velocity v = dx/dt = ε − a points toward noise. The paper's guided step
    A ← A + (1/n)·(v_τ + w·g),  g = (Y − Â)ᵀ·diag(W)·∂Â/∂A,  Â = A + (1 − τ)·v_τ
is, with v_τ = −v and dt = −1/n,
    x ← x + dt·(v − w·g),        Â = x − t·v,
so the guidance term enters with a minus sign here. (A plus sign pushes the chunk away from the old
one: the robot shakes at every boundary.) The weight w = min(β, (1 − τ)/(τ·r²)) with
r² = (1 − τ)²/(τ² + (1 − τ)²) is capped at β, 5 by default.
"""

from __future__ import annotations

import math

import torch

from policy.batch import Pi0Inputs
from policy.pi0 import Pi0

DEFAULT_BETA = 5.0


def soft_mask(horizon: int, frozen: int, execute: int, available: int | None = None) -> torch.Tensor:
    """(horizon,) guidance weights: 1 for i < frozen, c·(eᶜ − 1)/(e − 1) with
    c = (horizon − execute − i)/(horizon − execute − frozen + 1) up to horizon − execute, then 0;
    and 0 past the `available` steps the previous chunk still has."""
    index = torch.arange(horizon, dtype=torch.float32)
    end = horizon - execute
    c = (end - index) / max(end - frozen + 1, 1)
    weights = torch.where(index < frozen, torch.ones_like(c), c * torch.expm1(c) / (math.e - 1))
    weights = torch.where(index >= end, torch.zeros_like(c), weights)
    weights = torch.where(index < frozen, torch.ones_like(c), weights)  # frozen wins over a short horizon
    if available is not None:
        weights[available:] = 0.0
    return weights.clamp(0.0, 1.0)


def guidance_weight(t: float, beta: float) -> float:
    """min(β, (1 − τ)/(τ·r²)) at openpi time t (τ = 1 − t)."""
    tau = 1.0 - t
    if tau <= 0.0 or t <= 0.0:
        return beta
    r2 = t * t / (tau * tau + t * t)
    return min(beta, t / (tau * r2))


def guided_sample(
    model: Pi0,
    inputs: Pi0Inputs,
    target: torch.Tensor,
    weights: torch.Tensor,
    noise: torch.Tensor,
    num_steps: int | None = None,
    beta: float = DEFAULT_BETA,
) -> torch.Tensor:
    """A chunk (b, horizon, action_dim) sampled with guidance toward `target` (same shape, normalized
    like the model's actions) under `weights` ((horizon,) or (horizon, action_dim), 0 = free)."""
    steps = num_steps or model.config.num_steps
    with torch.no_grad():
        cache = model.prefix_cache(inputs)
    mask = weights if weights.dim() == 2 else weights[:, None]
    mask = mask.to(noise.device, noise.dtype)
    target = target.to(noise.device, noise.dtype)
    x, dt = noise, -1.0 / steps
    for step in range(steps):
        t = 1.0 + step * dt
        time = torch.full((x.shape[0],), t, device=x.device)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            velocity = model.denoise_step(cache, inputs.state, x_in, time)
            predicted = x_in - t * velocity  # where the flow would land from here: the chunk's estimate
            error = (target - predicted).detach() * mask
            (pull,) = torch.autograd.grad(predicted, x_in, grad_outputs=error)
        x = x + dt * (velocity.detach() - guidance_weight(t, beta) * pull)
    return x.detach()
