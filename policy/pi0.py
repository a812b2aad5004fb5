"""π0: a vision-language prefix and an action expert trained with conditional flow matching.

Tokens, in attention order:
    [camera 0 patches | camera 1 patches | … | prompt] [state] [action 1 … action H]
     └──────────────── prefix: bidirectional ───────┘  └blk┘  └──── one block ────┘
The prefix never sees the suffix, the state token sees the prefix, the action tokens see everything
before them and each other (`make_attention_mask`).

Flow matching in openpi's convention: t = 1 is pure noise, t = 0 the data. Training draws
t ~ Beta(1.5, 1)·0.999 + 0.001, x_t = t·ε + (1 − t)·a, and regresses the velocity ε − a.
Sampling starts from noise at t = 1 and takes N Euler steps of size −1/N with the prefix's keys and
values computed once (`prefix_cache`) and only the suffix recomputed per step (`denoise_step`).

Axis names in the shape comments (policy/gemma.py names the attention's): b batch, c cameras,
i × i pixels (image_size), p prefix tokens (every camera's patches, then the prompt's), l prompt tokens,
H action horizon (the suffix has 1 + H tokens), a action_dim, d the language model's width,
x the action expert's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policy import precision
from policy.batch import Pi0Inputs
from policy.config import Pi0Config
from policy.gemma import Gemma, KVCache, mixture_forward
from policy.siglip import SiglipVision


def make_attention_mask(pad_mask: torch.Tensor, block_starts: torch.Tensor) -> torch.Tensor:
    """(b, n, n) bool: token i may attend token j when both are real and j's block is not after i's.

    `block_starts` (b, n) int is 1 where a new block begins; its running sum numbers the blocks.
        [[1 1 1 1]]         → causal: each token its own block
        [[0 0 1 0]]         → prefix-LM: tokens 0-1 bidirectional, 2-3 see them and each other
        [[0 0 1 1 0]]       → π0: prefix, state block, action block
    """
    block = torch.cumsum(block_starts, dim=1)
    visible = block[:, None, :] <= block[:, :, None]
    real = pad_mask[:, None, :] & pad_mask[:, :, None]
    return visible & real


def time_embedding(time: torch.Tensor, width: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sine-cosine embedding (b, width) of flow times (b,), periods spaced geometrically."""
    fraction = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = time.double()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).float()


def sample_flow_time(
    batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """t ~ Beta(1.5, 1)·0.999 + 0.001 (more weight on noisy times), by inverting Beta(a, 1)'s CDF x^a."""
    uniform = torch.rand(batch, generator=generator, device=device)
    return uniform.pow(1 / 1.5) * 0.999 + 0.001


@dataclass(frozen=True, eq=False)
class PrefixCache:
    """What the suffix needs from the prefix: its keys/values per layer and which tokens are real."""

    kv: KVCache
    pad_mask: torch.Tensor  # (b, p) bool

    def repeat(self, times: int) -> PrefixCache:
        """Each sample's cache `times` times in a row (several noise draws against one prefix)."""
        if times == 1:
            return self
        return PrefixCache(self.kv.repeat(times), self.pad_mask.repeat_interleave(times, dim=0))


class Pi0(nn.Module):
    def __init__(self, config: Pi0Config) -> None:
        super().__init__()
        self.config = config
        expert_width = config.expert.width
        self.vision = SiglipVision(config.vision)
        self.projector = nn.Linear(config.vision.width, config.language.width)
        self.language = Gemma(config.language, config.vocab_size)
        self.expert = Gemma(config.expert, None)
        self.state_proj = nn.Linear(config.action_dim, expert_width)
        self.action_in_proj = nn.Linear(config.action_dim, expert_width)
        self.action_time_mlp_in = nn.Linear(2 * expert_width, expert_width)
        self.action_time_mlp_out = nn.Linear(expert_width, expert_width)
        self.action_out_proj = nn.Linear(expert_width, config.action_dim)

    # -- embedding ---------------------------------------------------------------------------
    def embed_prefix(self, inputs: Pi0Inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image patch tokens of every camera, then the prompt: tokens (b, p, d), pad mask (b, p) and
        block starts (b, p), from images (b, c, 3, i, i) and prompt tokens (b, l)."""
        batch, cameras = inputs.images.shape[:2]
        patches = self.projector(self.vision(inputs.images.flatten(0, 1)))
        per_camera = patches.shape[1]
        images = patches.reshape(batch, cameras * per_camera, -1)
        image_mask = inputs.image_masks[:, :, None].expand(batch, cameras, per_camera).reshape(batch, -1)
        words = self.language.embed(inputs.tokens).to(images.dtype)
        tokens = torch.cat([images, words], dim=1)
        pad_mask = torch.cat([image_mask, inputs.token_masks], dim=1)
        return tokens, pad_mask, torch.zeros_like(pad_mask, dtype=torch.long)

    def embed_suffix(
        self, state: torch.Tensor, noisy_actions: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The state token, then one token per action mixed with the flow time's embedding: tokens
        (b, 1 + H, x), pad mask and block starts (b, 1 + H), from state (b, a), noisy actions (b, H, a)
        and flow times (b,)."""
        batch, horizon, _ = noisy_actions.shape
        state_token = self.state_proj(state)[:, None]
        actions = self.action_in_proj(noisy_actions)
        config = self.config
        times = time_embedding(time, config.expert.width, config.time_min_period, config.time_max_period)
        times = times[:, None].expand(batch, horizon, -1).to(actions.dtype)
        mixed = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([actions, times], dim=-1))))
        tokens = torch.cat([state_token, mixed.to(state_token.dtype)], dim=1)
        pad_mask = torch.ones(batch, 1 + horizon, dtype=torch.bool, device=state.device)
        block_starts = torch.zeros(batch, 1 + horizon, dtype=torch.long, device=state.device)
        block_starts[:, :2] = 1  # the state opens a block, the first action opens the next
        return tokens, pad_mask, block_starts

    # -- the velocity field ------------------------------------------------------------------
    def velocity(self, inputs: Pi0Inputs, noisy_actions: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """v(x_t, t) (b, H, a) from one joint pass over prefix and suffix (training; the reference for
        the cache); noisy actions (b, H, a), times (b,)."""
        prefix, prefix_pad, prefix_blocks = self.embed_prefix(inputs)
        suffix, suffix_pad, suffix_blocks = self.embed_suffix(inputs.state, noisy_actions, time)
        pad_mask = torch.cat([prefix_pad, suffix_pad], dim=1)
        mask = make_attention_mask(pad_mask, torch.cat([prefix_blocks, suffix_blocks], dim=1))
        positions = torch.cumsum(pad_mask.long(), dim=1) - 1
        (_, out), _ = mixture_forward([self.language, self.expert], [prefix, suffix], mask, positions)
        assert out is not None
        return self._actions_out(out)

    def prefix_cache(self, inputs: Pi0Inputs) -> PrefixCache:
        """Run the prefix alone once and keep its keys and values."""
        prefix, pad_mask, blocks = self.embed_prefix(inputs)
        mask = make_attention_mask(pad_mask, blocks)
        positions = torch.cumsum(pad_mask.long(), dim=1) - 1
        _, kv = mixture_forward(
            [self.language, self.expert], [prefix, None], mask, positions, keep_cache=True
        )
        assert kv is not None
        return PrefixCache(kv, pad_mask)

    def denoise_step(
        self, cache: PrefixCache, state: torch.Tensor, noisy_actions: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """v(x_t, t) (b, H, a) for the suffix only, attending to the cached prefix; state (b, a), noisy
        actions (b, H, a), times (b,)."""
        suffix, suffix_pad, blocks = self.embed_suffix(state, noisy_actions, time)
        batch, length = suffix_pad.shape
        to_prefix = cache.pad_mask[:, None, :].expand(batch, length, -1)
        mask = torch.cat([to_prefix, make_attention_mask(suffix_pad, blocks)], dim=2)
        positions = cache.pad_mask.sum(dim=1, keepdim=True) + torch.cumsum(suffix_pad.long(), dim=1) - 1
        (_, out), _ = mixture_forward([self.language, self.expert], [None, suffix], mask, positions, cache.kv)
        assert out is not None
        return self._actions_out(out)

    def _actions_out(self, suffix_out: torch.Tensor) -> torch.Tensor:
        """The action tokens' outputs (b, 1 + H, x) → velocities (b, H, a), in fp32."""
        horizon = self.config.action_horizon
        return self.action_out_proj(suffix_out[:, -horizon:]).float()

    # -- training and sampling ---------------------------------------------------------------
    def forward(
        self, inputs: Pi0Inputs, actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """The training loss's elements (b·k, H, a); `forward`, so DDP/FSDP wrappers see the pass."""
        return self.flow_matching_loss(inputs, actions, noise, time)

    def flow_matching_loss(
        self, inputs: Pi0Inputs, actions: torch.Tensor, noise: torch.Tensor, time: torch.Tensor
    ) -> torch.Tensor:
        """Squared error of the predicted velocity, (b·k, H, a); the caller masks and means. actions
        (b, H, a); noise (b·k, H, a); time (b·k,).

        `noise` and `time` may hold k draws per sample (b·k rows, each sample's draws together): the
        prefix — vision and language, most of a step — then runs once and only the action expert runs
        k times, against its keys and values, which is the same function as k joint passes."""
        draws = noise.shape[0] // actions.shape[0]
        if draws * actions.shape[0] != noise.shape[0] or time.shape[0] != noise.shape[0]:
            raise ValueError(
                f"noise and time need k rows per sample, got {noise.shape[0]} for {len(actions)}"
            )
        actions = actions.repeat_interleave(draws, dim=0) if draws > 1 else actions
        t = time[:, None, None]
        noisy = t * noise + (1 - t) * actions
        if self.prefix_frozen or draws > 1:
            with torch.no_grad() if self.prefix_frozen else contextlib.nullcontext():
                cache = self.prefix_cache(inputs)
            state = inputs.state.repeat_interleave(draws, dim=0)
            predicted = self.denoise_step(cache.repeat(draws), state, noisy, time)
        else:
            predicted = self.velocity(inputs, noisy, time)
        return (predicted - (noise - actions)).pow(2)

    @torch.no_grad()
    def sample_actions(
        self, inputs: Pi0Inputs, noise: torch.Tensor | None = None, num_steps: int | None = None
    ) -> torch.Tensor:
        """A chunk (b, H, a) by Euler integration from noise (t = 1) to data (t = 0)."""
        steps = num_steps or self.config.num_steps
        x = noise if noise is not None else self.noise(inputs.batch_size, inputs.state.device)
        cache = self.prefix_cache(inputs)
        dt = -1.0 / steps
        for step in range(steps):
            time = torch.full((x.shape[0],), 1.0 + step * dt, device=x.device)
            x = x + dt * self.denoise_step(cache, inputs.state, x, time)
        return x

    def noise(
        self, batch: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = (batch, self.config.action_horizon, self.config.action_dim)
        return torch.randn(shape, device=device, generator=generator)

    # -- precision and freezing --------------------------------------------------------------
    @property
    def prefix_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.prefix_parameters())

    def prefix_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.vision, self.projector, self.language):
            yield from module.parameters()

    def unused_parameters(self) -> Iterator[nn.Parameter]:
        """Weights no action depends on: the prefix's last layer after its keys/values, and its final
        norm (action tokens read the prefix only through keys and values). Published checkpoints carry
        them; training leaves them alone, which also keeps DDP's gradient buckets static."""
        last = self.language.layer(self.config.language.depth - 1)
        for module in (last.self_attn.o_proj, last.post_attention_layernorm, last.mlp, self.language.norm):
            yield from module.parameters()

    def freeze_prefix(self) -> None:
        """Train the action expert only: the vision-language prefix keeps its (pretrained) weights."""
        for parameter in self.prefix_parameters():
            parameter.requires_grad_(False)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast where this device multiplies bf16 fast (policy.precision), else fp32."""
        return precision.autocast(next(self.parameters()).device)
