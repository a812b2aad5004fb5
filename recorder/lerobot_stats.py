"""Per-feature statistics as LeRobot keeps them (min, max, mean, std, count, quantiles): of an
episode's columns and sampled frames, and aggregated over episodes for meta/stats.json."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats of (n, d) values, with the keys LeRobot's stats have."""
    data = values.astype(np.float64)
    stats = {
        "min": data.min(axis=0),
        "max": data.max(axis=0),
        "mean": data.mean(axis=0),
        "std": data.std(axis=0),
        "count": np.array([len(data)]),
    }
    quantiles = np.quantile(data, list(QUANTILES.values()), axis=0)
    return {**stats, **dict(zip(QUANTILES, quantiles, strict=True))}


def image_stats(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel stats of the sampled (downsampled) frames in 0..1, shaped (3, 1, 1) like
    LeRobot's; `count` is the number of frames sampled."""
    pixels = np.concatenate([image.reshape(-1, 3) for image in images]) / 255.0
    stats = feature_stats(pixels)
    shaped = {key: value.reshape(3, 1, 1) for key, value in stats.items() if key != "count"}
    return {**shaped, "count": np.array([len(images)])}


def _downsampled(image: np.ndarray) -> np.ndarray:
    """About 150 pixels across, as LeRobot samples large frames for stats."""
    longest = max(image.shape[:2])
    step = 1 if longest < 300 else longest // 150
    return image[::step, ::step]


class FrameSampler:
    """Keeps evenly spaced frames of an episode for its image stats, while they stream past."""

    def __init__(self, count: int, wanted: int) -> None:
        self._keep = set(np.round(np.linspace(0, count - 1, min(count, max(wanted, 1)))).astype(int).tolist())
        self.images: list[np.ndarray] = []

    def watch(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for index, image in enumerate(images):
            if index in self._keep:
                self.images.append(_downsampled(image).copy())
            yield image


def aggregate_stats(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Whole-dataset stats from per-episode ones: exact min, max, mean and std; quantiles as the
    count-weighted mean of the episodes' (as LeRobot aggregates them)."""
    counts = np.array([part["count"][0] for part in parts], dtype=np.float64)
    shape = (-1,) + (1,) * np.asarray(parts[0]["mean"]).ndim
    weights = (counts / counts.sum()).reshape(shape)
    means = np.stack([part["mean"] for part in parts])
    mean = (weights * means).sum(axis=0)
    variance = (weights * (np.stack([part["std"] for part in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    stats = {
        "min": np.min(np.stack([part["min"] for part in parts]), axis=0),
        "max": np.max(np.stack([part["max"] for part in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())]),
    }
    for key in QUANTILES:
        stats[key] = (weights * np.stack([part[key] for part in parts])).sum(axis=0)
    return stats


def episode_stats(row: Mapping[str, Any], name: str) -> dict[str, np.ndarray]:
    prefix = f"stats/{name}/"
    return {key[len(prefix) :]: np.asarray(value) for key, value in row.items() if key.startswith(prefix)}
