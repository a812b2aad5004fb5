"""Checkpoints: safetensors for every tensor, JSON for everything else — nothing is ever unpickled.

A checkpoint is a folder `checkpoints/<step>/` inside a run folder:
- `model.safetensors`: the weights to act with (the EMA weights when training keeps an EMA),
  under the model's own names, so `policy.weights` loads them like any published file;
- `train_state.safetensors`: what resuming needs beyond that — the optimizer's moments and, with
  an EMA, the raw weights;
- `checkpoint.json`: the model config, normalization statistics, data and training settings, the
  step and the optimizer's hyperparameters.
It is written to a `.partial` folder and renamed when complete, so a crash mid-save leaves the
previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from policy.checkpoint_checks import check_finite_weights, check_statistics, check_weight_file
from policy.config import Pi0Config
from policy.normalize import Normalizer
from policy.pi0 import Pi0
from policy.transform import DataConfig
from policy.weights import WeightFileError, WeightShapeError, load_pi0_weights

MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
META_FILE = "checkpoint.json"
CHECKPOINTS = "checkpoints"
PARTIAL = ".partial"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class CheckpointMeta:
    config: Pi0Config
    normalizer: Normalizer
    data: DataConfig
    step: int
    train: Mapping[str, Any]  # the training settings, for the record and for resuming
    tokenizer_path: str | None = None
    tasks: tuple[str, ...] = ()  # the training episodes' task texts

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "norm_stats": self.normalizer.to_dict(),
            "data": self.data.to_dict(),
            "train": dict(self.train),
            "tokenizer_path": self.tokenizer_path,
            "tasks": list(self.tasks),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> CheckpointMeta:
        return cls(
            config=Pi0Config.from_dict(values["config"]),
            normalizer=Normalizer.from_dict(values["norm_stats"]),
            data=DataConfig.from_dict(values["data"]),
            step=int(values["step"]),
            train=values.get("train", {}),
            tokenizer_path=values.get("tokenizer_path"),
            tasks=tuple(values.get("tasks", ())),
        )


@dataclass(frozen=True, eq=False)
class TrainState:
    """Tensors for resuming, by parameter name."""

    raw_weights: dict[str, torch.Tensor]  # the trained weights when model.safetensors holds the EMA
    optimizer: dict[str, dict[str, torch.Tensor]]  # parameter name → {exp_avg, exp_avg_sq, step}


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"{step:08d}"


def run_of(checkpoint: Path) -> Path | None:
    """The run folder a checkpoint folder belongs to (None for a checkpoint kept on its own)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else None


def save_checkpoint(
    folder: Path, weights: Mapping[str, torch.Tensor], meta: CheckpointMeta, state: TrainState | None = None
) -> Path:
    """Write a checkpoint atomically (see the module docstring) and return its folder."""
    partial = folder.with_name(folder.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(_contiguous(weights), str(partial / MODEL_FILE))
    if state is not None:
        tensors = {f"weights.{name}": t for name, t in state.raw_weights.items()}
        for name, moments in state.optimizer.items():
            tensors.update({f"optimizer.{name}.{key}": t for key, t in moments.items()})
        save_file(_contiguous(tensors), str(partial / TRAIN_STATE_FILE))
    (partial / META_FILE).write_text(json.dumps(meta.to_json(), indent=1))
    for file in partial.iterdir():
        _fsync(file)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    _fsync(folder.parent)
    return folder


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of a run (partial saves are skipped)."""
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return None
    complete = sorted(
        p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and (p / META_FILE).exists()
    )
    return complete[-1] if complete else None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder, given it or a run folder (its latest checkpoint)."""
    path = Path(path)
    if (path / META_FILE).exists():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"{path} is neither a checkpoint (no {META_FILE}) nor a run folder with checkpoints; "
            "give the folder `rig train` printed"
        )
    return latest


def read_meta(folder: Path) -> CheckpointMeta:
    try:
        meta = CheckpointMeta.from_json(json.loads((folder / META_FILE).read_text()))
        check_statistics(meta.config, meta.normalizer)
        return meta
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {folder}: {META_FILE} is unreadable ({error}); use an earlier checkpoint of the run "
            "or train again"
        ) from error


def load_policy(path: Path, device: torch.device | str = "cpu") -> tuple[Pi0, CheckpointMeta]:
    """The model of a checkpoint (or of a run's latest), in eval mode, and its metadata."""
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    try:
        check_weight_file(meta.config, folder / MODEL_FILE)  # before allocating what the config says
        model = Pi0(meta.config)
        report = load_pi0_weights(model, folder / MODEL_FILE)
        check_finite_weights(model)
    except (WeightFileError, WeightShapeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {folder}: {error}") from error
    if report.missing:
        raise CheckpointError(
            f"checkpoint {folder} lacks {len(report.missing)} weights (e.g. {report.missing[0]}); "
            "it does not belong to its config — use another checkpoint"
        )
    return model.to(device).eval(), meta


def load_train_state(folder: Path) -> TrainState:
    path = folder / TRAIN_STATE_FILE
    raw: dict[str, torch.Tensor] = {}
    optimizer: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(path), framework="pt") as file:
            for key in file.keys():  # noqa: SIM118 - safe_open is not a mapping
                kind, rest = key.split(".", 1)
                if kind == "weights":
                    raw[rest] = file.get_tensor(key)
                else:
                    name, moment = rest.rsplit(".", 1)
                    optimizer.setdefault(name, {})[moment] = file.get_tensor(key)
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {folder}: {TRAIN_STATE_FILE} is unreadable ({error}); resume from an earlier "
            "checkpoint by giving its folder to --resume"
        ) from error
    return TrainState(raw, optimizer)
