"""Gemma-style decoders and the mixture of transformers that runs two of them as one attention.

π0 has two sets of weights — the prefix language model (images + prompt) and the action expert
(state + noisy actions) — and in every layer the queries, keys and values of both token groups are
concatenated and go through one softmax. Each group keeps its own norms, projections and MLP.

Keys and values of a forward pass can be kept (`keep_cache`) and handed to a later pass (`cache`):
the prefix never attends to the suffix, so at inference its keys/values are computed once and only
the suffix is recomputed at each denoising step.

Axis names in the shape comments and signatures (as openpi writes them):
    b  batch               s  tokens of one group (prefix or suffix), n  a pass's tokens (its groups')
                           S  all tokens attended to (the cached ones, then the pass's n)
    d  a group's width     h  query heads, k  key/value heads (grouped-query attention), e  head width
    f  the MLP's hidden width
e.g. a group's hidden states are (b, s, d); queries (b, h, s, e); cached keys (b, k, S, e).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from policy.config import GemmaConfig

RMS_EPS = 1e-6
ROPE_MAX_WAVELENGTH = 10_000.0


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: x·(1 + w), computed in fp32 whatever the autocast dtype."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d)."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + RMS_EPS)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


class GemmaAttention(nn.Module):
    def __init__(self, config: GemmaConfig) -> None:
        super().__init__()
        heads, kv, dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.width, heads * dim, bias=False)
        self.k_proj = nn.Linear(config.width, kv * dim, bias=False)
        self.v_proj = nn.Linear(config.width, kv * dim, bias=False)
        self.o_proj = nn.Linear(heads * dim, config.width, bias=False)


class GemmaMlp(nn.Module):
    """GeGLU with tanh-approximated GELU."""

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.width, config.mlp_dim, bias=False)
        self.up_proj = nn.Linear(config.width, config.mlp_dim, bias=False)
        self.down_proj = nn.Linear(config.mlp_dim, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, s, d) -> (b, s, d), through (b, s, f)."""
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaLayer(nn.Module):
    """One decoder layer, in the two halves the shared attention sits between (both are registered
    as forward methods under FSDP, so each gathers the layer's weights)."""

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__()
        self.config = config
        self.input_layernorm = RMSNorm(config.width)
        self.self_attn = GemmaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.width)
        self.mlp = GemmaMlp(config)

    def attention_inputs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (b, s, h, e), keys and values (b, s, k, e) of this group's hidden states h (b, s, d)."""
        batch, config, attention = h.shape[0], self.config, self.self_attn
        x = self.input_layernorm(h)
        return (
            attention.q_proj(x).view(batch, -1, config.num_heads, config.head_dim),
            attention.k_proj(x).view(batch, -1, config.num_kv_heads, config.head_dim),
            attention.v_proj(x).view(batch, -1, config.num_kv_heads, config.head_dim),
        )

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Output projection and residual, then the MLP and its residual: h (b, s, d) and the group's
        attention output (b, s, h·e) -> (b, s, d)."""
        h = h + self.self_attn.o_proj(attended)
        return h + self.mlp(self.post_attention_layernorm(h))


class Gemma(nn.Module):
    """One decoder's weights. The action expert has no token embeddings (vocab_size None)."""

    def __init__(self, config: GemmaConfig, vocab_size: int | None) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(vocab_size, config.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(config) for _ in range(config.depth))
        self.norm = RMSNorm(config.width)

    def layer(self, index: int) -> GemmaLayer:
        layer = self.layers[index]
        assert isinstance(layer, GemmaLayer)
        return layer

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings scaled by √width, as Gemma does: (b, s) ids -> (b, s, d)."""
        if self.embed_tokens is None:
            raise ValueError("this decoder has no token embeddings")
        return self.embed_tokens(tokens) * (self.config.width**0.5)


@dataclass(frozen=True, eq=False)
class KVCache:
    """Per layer, the rotated keys and the values: (b, k, S, e)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2])

    def repeat(self, times: int) -> KVCache:
        """Each sample's keys and values `times` times in a row along the batch."""
        return KVCache(
            tuple(k.repeat_interleave(times, dim=0) for k in self.keys),
            tuple(v.repeat_interleave(times, dim=0) for v in self.values),
        )


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of (b, h, n, e) (or k heads) at integer positions (b, n), computed in
    fp32."""
    half = x.shape[-1] // 2
    exponents = torch.arange(half, device=x.device, dtype=torch.float32) * (2.0 / x.shape[-1])
    radians = positions.float()[:, None, :, None] / (ROPE_MAX_WAVELENGTH**exponents)
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def mixture_forward(
    experts: Sequence[Gemma],
    hidden: Sequence[torch.Tensor | None],
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: KVCache | None = None,
    keep_cache: bool = False,
) -> tuple[list[torch.Tensor | None], KVCache | None]:
    """Run token groups (one per expert; None = no tokens this pass) through the shared layers.

    hidden: each group's (b, s, d) (the groups' s add up to n). mask: (b, n, S) bool, True where a
    query may attend a key; the keys are the cached ones followed by this pass's tokens in group
    order. positions: (b, n) RoPE positions of this pass's tokens. Returns each group's final-normed
    output (b, s, d) and, with keep_cache, the keys/values of every token seen (cached ones included).
    """
    active = [(expert, h) for expert, h in zip(experts, hidden, strict=True) if h is not None]
    sizes = [h.shape[1] for _, h in active]
    batch, tokens = mask.shape[0], sum(sizes)
    config = active[0][0].config
    heads, head_dim = config.num_heads, config.head_dim
    mask = _attend_self_when_alone(mask)
    states = [h for _, h in active]
    kept_keys: list[torch.Tensor] = []
    kept_values: list[torch.Tensor] = []
    for index in range(config.depth):
        layers = [expert.layer(index) for expert, _ in active]
        queries, keys, values = zip(
            *(layer.attention_inputs(h) for layer, h in zip(layers, states, strict=True)), strict=True
        )
        q = apply_rope(torch.cat(queries, dim=1).transpose(1, 2), positions)
        k = apply_rope(torch.cat(keys, dim=1).transpose(1, 2), positions)
        v = torch.cat(values, dim=1).transpose(1, 2)
        if cache is not None:
            k = torch.cat([cache.keys[index].to(k.dtype), k], dim=2)
            v = torch.cat([cache.values[index].to(v.dtype), v], dim=2)
        if keep_cache:
            kept_keys.append(k)
            kept_values.append(v)
        attended = grouped_attention(q, k, v, mask)
        attended = attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        parts = attended.split(sizes, dim=1)
        states = [layer.finish(h, part) for layer, h, part in zip(layers, states, parts, strict=True)]
    outputs = iter(expert.norm(h) for (expert, _), h in zip(active, states, strict=True))
    results = [None if h is None else next(outputs) for h in hidden]
    kept = KVCache(tuple(kept_keys), tuple(kept_values)) if keep_cache else None
    return results, kept


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked attention with fewer key/value heads than query heads (π0: 8 query heads, 1 KV head).

    SDPA's fused CUDA kernels that take a mask (memory-efficient, cuDNN) do not take `enable_gqa`, so a
    masked GQA call runs the unfused math kernel. Each KV head's group of query heads is folded into
    its query length instead: one ordinary attention per KV head, exactly the same values, on a fused
    kernel. q: (b, h, n, e); k, v: (b, k, S, e); mask: (b, n, S) bool, True = may attend. Returns
    (b, h, n, e).
    """
    batch, heads, queries, dim = q.shape
    group = heads // k.shape[1]
    folded = q.reshape(batch, k.shape[1], group * queries, dim)  # query head h reads KV head h // group
    mask = mask[:, None].expand(batch, group, queries, mask.shape[-1]).reshape(batch, 1, group * queries, -1)
    attended = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask)
    return attended.reshape(batch, heads, queries, dim)


def _attend_self_when_alone(mask: torch.Tensor) -> torch.Tensor:
    """A padding token's query attends to nothing, and an all-masked softmax row is NaN, which would
    reach real tokens through 0·NaN. Letting such rows see their own key keeps every value finite and
    changes nothing a real token sees."""
    queries, keys = mask.shape[-2:]
    alone = ~mask.any(dim=-1, keepdim=True)
    # Query i's own key is key i + (keys - queries): the cached keys come first. Built without a
    # data-dependent branch or an in-place write to a view, so torch.compile keeps one graph.
    rows = torch.arange(queries, device=mask.device)[:, None] + (keys - queries)
    own_key = rows == torch.arange(keys, device=mask.device)[None, :]
    return mask | (alone & own_key)
