"""Normalization of state and actions: π0 learns z-scores, and the robot needs them undone.

The statistics come from a store's episodes (`compute_norm_stats`) or from an openpi checkpoint's
`norm_stats.json` (`load_openpi_norm_stats`), and travel with a checkpoint as JSON (`to_dict`). The
arithmetic is openpi's z-score, `(x - mean) / (std + 1e-6)`, so a model fine-tuned by openpi reads
the same numbers here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from recorder.catalogue import TRAINING_EXCLUDES
from recorder.steps import read_steps
from recorder.store import Store

EPSILON = 1e-6

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _vector(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"norm stats need 1-D vectors, got shape {array.shape}")
    return array


@dataclass(frozen=True, eq=False)
class NormStats:
    """Per-dimension statistics of one vector (state or action). q01/q99 are kept for openpi's
    quantile normalization; the z-score here does not use them, and openpi files may lack them."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, value in self.vectors().items():
            object.__setattr__(self, name, _vector(value))
        lengths = {name: len(value) for name, value in self.vectors().items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"norm stats vectors differ in length: {lengths}")

    def vectors(self) -> dict[str, np.ndarray]:
        """The statistics present, by name."""
        named = {"mean": self.mean, "std": self.std, "q01": self.q01, "q99": self.q99}
        return {name: value for name, value in named.items() if value is not None}

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def of_samples(cls, samples: np.ndarray) -> NormStats:
        """The statistics of (n, dim) samples: population std (as openpi's running stats), exact quantiles."""
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or not len(data):
            raise ValueError(f"norm stats need (n, dim) samples with n > 0, got shape {data.shape}")
        q01, q99 = np.quantile(data, [0.01, 0.99], axis=0)
        return cls(data.mean(axis=0), data.std(axis=0), q01, q99)

    def truncated(self, dim: int) -> NormStats:
        """The first `dim` dimensions (openpi pads its statistics to the model's 32)."""
        if self.dim < dim:
            raise ValueError(f"norm stats have {self.dim} dimensions, {dim} are needed")
        return NormStats(
            self.mean[:dim],
            self.std[:dim],
            None if self.q01 is None else self.q01[:dim],
            None if self.q99 is None else self.q99[:dim],
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {name: value.tolist() for name, value in self.vectors().items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "norm stats") -> NormStats:
        """From `to_dict`'s (or openpi's) layout; a missing key is named with `where` in front."""
        for name in ("mean", "std"):
            if name not in values:
                raise ValueError(f"{where}: missing key {name!r}")
        return cls(values["mean"], values["std"], values.get("q01"), values.get("q99"))


def _check_dims(x: np.ndarray | torch.Tensor, stats: NormStats, what: str) -> None:
    if x.shape[-1] != stats.dim:
        raise ValueError(
            f"{what} has {x.shape[-1]} dimensions (shape {tuple(x.shape)}), its norm stats {stats.dim}"
        )


def _like(values: np.ndarray, x: Array) -> Array:
    """The statistic as the data's kind of array (torch: its dtype and device)."""
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return values.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)


def standardize(x: Array, stats: NormStats, what: str) -> Array:
    _check_dims(x, stats, what)
    return (x - _like(stats.mean, x)) / (_like(stats.std, x) + EPSILON)


def unstandardize(x: Array, stats: NormStats, what: str) -> Array:
    _check_dims(x, stats, what)
    return x * (_like(stats.std, x) + EPSILON) + _like(stats.mean, x)


@dataclass(frozen=True, eq=False)
class Normalizer:
    """The state's and the actions' statistics; works on numpy arrays and torch tensors alike
    (the last axis is the dimension)."""

    state: NormStats
    actions: NormStats

    def normalize_state(self, x: Array) -> Array:
        return standardize(x, self.state, "state")

    def normalize_actions(self, x: Array) -> Array:
        return standardize(x, self.actions, "actions")

    def unnormalize_actions(self, x: Array) -> Array:
        return unstandardize(x, self.actions, "actions")

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {"state": self.state.to_dict(), "actions": self.actions.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "norm stats") -> Normalizer:
        for name in ("state", "actions"):
            if not isinstance(values.get(name), Mapping):
                raise ValueError(f"{where}: missing key {name!r}")
        return cls(
            NormStats.from_dict(values["state"], f"{where}: state"),
            NormStats.from_dict(values["actions"], f"{where}: actions"),
        )


def compute_norm_stats(
    store_root: Path,
    episodes: Sequence[int] | None = None,
    exclude_tags: Sequence[str] = TRAINING_EXCLUDES,
    include_flagged: bool = False,
) -> Normalizer:
    """Statistics of the steps (qpos for the state, action for the actions) of the episodes training
    reads: complete ones, all or the listed ones, less those tagged `exclude_tags` and, unless
    `include_flagged`, those flagged (as `WindowReader`). Reads the step files only, never a video."""
    with Store(Path(store_root), create=False, lock=False) as store:
        records = store.catalogue.training_episodes(episodes, exclude_tags, include_flagged)
        # Field by field: episodes with other cameras have other record layouts.
        steps = [read_steps(store.episode_dir(r.id))[["qpos", "action"]] for r in records]
        qpos, actions = (np.concatenate([s[field] for s in steps]) for field in ("qpos", "action"))
    if not len(qpos):
        raise ValueError(f"{store_root}: the complete episodes hold no steps")
    return Normalizer(NormStats.of_samples(qpos), NormStats.of_samples(actions))


def load_openpi_norm_stats(path: Path, dim: int = 14) -> Normalizer:
    """openpi's `norm_stats.json` (`{"norm_stats": {"state": {...}, "actions": {...}}}`), its vectors
    (often padded to the model's 32) cut to the robot's `dim`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    if not isinstance(values, Mapping) or not isinstance(values.get("norm_stats"), Mapping):
        raise ValueError(f"{path}: not an openpi norm_stats.json: missing key 'norm_stats'")
    normalizer = Normalizer.from_dict(values["norm_stats"], f"{path}: norm_stats")
    try:
        return Normalizer(normalizer.state.truncated(dim), normalizer.actions.truncated(dim))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
