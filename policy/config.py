"""π0 sizes as frozen dataclasses: one model code path, sized only by these numbers.

`pi0` is the published 3B model (PaliGemma: SigLIP So400m/14 + Gemma 2B, and a Gemma-300M-sized
action expert). The small sizes differ only in numbers, so they exercise the same code on a 2-core
CPU: `pi0-small` trains there in minutes per hundred steps, `pi0-tiny` is for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

TokenizerKind = Literal["paligemma", "bytes"]
TOKENIZERS = ("paligemma", "bytes")


def _check_sizes(owner: str, config: object, names: tuple[str, ...]) -> None:
    """Each named field a positive int: a config read from a file may hold anything, and a string or
    a negative size would fail deep inside torch (or allocate without end) instead of here."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class VisionConfig:
    """A SigLIP-style ViT: patches → learned positions → pre-norm encoder layers → final norm."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16

    def __post_init__(self) -> None:
        _check_sizes("vision", self, ("image_size", "patch_size", "width", "depth", "mlp_dim", "num_heads"))

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma-style decoder (the prefix language model or the action expert)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        _check_sizes("gemma", self, ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim"))


@dataclass(frozen=True)
class Pi0Config:
    name: str
    vision: VisionConfig
    language: GemmaConfig  # the prefix model (images + prompt)
    expert: GemmaConfig  # the action expert (state + noisy actions)
    vocab_size: int = 257_152
    tokenizer: TokenizerKind = "paligemma"
    max_token_len: int = 48
    action_horizon: int = 50
    action_dim: int = 32  # actions and state are zero-padded to this width
    num_steps: int = 10  # Euler steps of the flow at inference
    time_min_period: float = 4e-3
    time_max_period: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.vision, VisionConfig) or not isinstance(self.language, GemmaConfig):
            raise ValueError(f"{self.name}: vision and language must be configs, not raw values")
        if not isinstance(self.expert, GemmaConfig):
            raise ValueError(f"{self.name}: expert must be a config, not a raw value")
        _check_sizes(
            self.name, self, ("vocab_size", "max_token_len", "action_horizon", "action_dim", "num_steps")
        )
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(
                f"{self.name}: tokenizer {self.tokenizer!r} is not one of {', '.join(TOKENIZERS)}"
            )
        periods = (self.time_min_period, self.time_max_period)
        if not all(
            isinstance(p, int | float) and not isinstance(p, bool) and 0 < p < float("inf") for p in periods
        ):
            raise ValueError(f"{self.name}: time periods must be positive numbers, got {periods}")
        lm, ex = self.language, self.expert
        if (lm.depth, lm.num_heads, lm.num_kv_heads, lm.head_dim) != (
            ex.depth,
            ex.num_heads,
            ex.num_kv_heads,
            ex.head_dim,
        ):
            raise ValueError(
                f"{self.name}: the language model and the action expert share one attention per layer, "
                "so their depth, heads, KV heads and head_dim must match"
            )
        if lm.num_heads % lm.num_kv_heads:
            raise ValueError(f"{self.name}: num_heads must be a multiple of num_kv_heads")
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(f"{self.name}: image_size must be a multiple of patch_size")
        if self.expert.width % 2:
            raise ValueError(f"{self.name}: the time embedding needs an even expert width")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Pi0Config:
        values = dict(values)
        values["vision"] = VisionConfig(**values["vision"])
        values["language"] = GemmaConfig(**values["language"])
        values["expert"] = GemmaConfig(**values["expert"])
        return cls(**values)


GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)

CONFIGS: dict[str, Pi0Config] = {
    config.name: config
    for config in (
        Pi0Config(name="pi0", vision=VisionConfig(), language=GEMMA_2B, expert=GEMMA_300M),
        Pi0Config(
            name="pi0-small",
            vision=VisionConfig(image_size=112, patch_size=14, width=192, depth=4, mlp_dim=768, num_heads=3),
            language=GemmaConfig(width=256, depth=6, mlp_dim=1024, num_heads=4, num_kv_heads=1, head_dim=64),
            expert=GemmaConfig(width=128, depth=6, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64),
            vocab_size=259,
            tokenizer="bytes",
            max_token_len=32,
        ),
        Pi0Config(
            name="pi0-tiny",
            vision=VisionConfig(image_size=32, patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2),
            language=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
            expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
            vocab_size=259,
            tokenizer="bytes",
            max_token_len=16,
            action_horizon=10,
        ),
    )
}


def get_config(name: str, **overrides: Any) -> Pi0Config:
    """A named size, optionally with some top-level fields replaced (e.g. action_horizon)."""
    try:
        config = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown π0 config {name!r}; known: {', '.join(CONFIGS)}") from None
    return dataclasses.replace(config, **overrides) if overrides else config
