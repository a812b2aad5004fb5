"""`rig train`'s defaults as its help states them, without importing torch (policy.train does): a
test holds them equal to TrainSettings'. The options themselves default to None, so that `--resume`
can tell an option given from one left out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainDefaults:
    config: str = "pi0-small"
    steps: int = 1000
    batch_size: int = 32
    clip_norm: float = 1.0
    noise_draws: int = 1
    seed: int = 0
    save_every: int = 250
    log_every: int = 10


DEFAULTS = TrainDefaults()
