"""Damaged and foreign checkpoints are refused when opened, in one sentence naming the file and the
fault: never a torch error from inside a layer, a runaway allocation, or a model that loads and then
fails at every inference. Each case is one damage done to a copy of a real (tiny) checkpoint."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from policy.checkpoint import META_FILE, MODEL_FILE, CheckpointError, load_policy
from rig.cli import main

Damage = Callable[[Path], None]


def edit_meta(change: Callable[[dict[str, Any]], None]) -> Damage:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / META_FILE).read_text())
        change(meta)
        (folder / META_FILE).write_text(json.dumps(meta))

    return damage


def edit_weights(change: Callable[[dict[str, torch.Tensor]], None]) -> Damage:
    def damage(folder: Path) -> None:
        weights = load_file(str(folder / MODEL_FILE))
        change(weights)
        save_file(weights, str(folder / MODEL_FILE))

    return damage


def set_path(path: str, value: object) -> Damage:
    """Set a value in checkpoint.json by dotted path (`config.vision.width`)."""

    def change(meta: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value

    return edit_meta(change)


def nan_everywhere(weights: dict[str, torch.Tensor]) -> None:
    for tensor in weights.values():
        tensor.fill_(float("nan"))


def one_inf(weights: dict[str, torch.Tensor]) -> None:
    next(iter(weights.values())).view(-1)[0] = float("inf")


def truncate(name: str, keep: int) -> Damage:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])

    return damage


DAMAGES: dict[str, tuple[Damage, str]] = {
    "string width": (
        set_path("config.vision.width", "32"),
        "vision.width must be a positive integer, got '32'",
    ),
    "huge mlp_dim": (set_path("config.vision.mlp_dim", 10**9), "the config does not belong to these weights"),
    "huge vocabulary": (set_path("config.vocab_size", 10**10), "the config does not belong to these weights"),
    "deeper than the weights": (set_path("config.vision.depth", 3), "the config does not belong"),
    "negative horizon": (set_path("config.action_horizon", -5), "action_horizon must be a positive integer"),
    "zero denoising steps": (set_path("config.num_steps", 0), "num_steps must be a positive integer"),
    "boolean head count": (set_path("config.language.num_heads", True), "must be a positive integer"),
    "unknown tokenizer": (set_path("config.tokenizer", "pickle"), "tokenizer 'pickle' is not one of"),
    "unknown config key": (set_path("config.surprise", 1), "unexpected keyword argument 'surprise'"),
    "NaN time period": (set_path("config.time_max_period", float("nan")), "time periods must be positive"),
    "short state stats": (set_path("norm_stats.state.mean", [0.0] * 13), "vectors differ in length"),
    "short stats": (
        set_path("norm_stats.actions", {"mean": [0.0] * 13, "std": [1.0] * 13}),
        "norm stats for the actions have 13 values, the robot has 14",
    ),
    "NaN stats": (set_path("norm_stats.state.std", [float("nan")] * 14), "state.std hold NaN or inf"),
    "negative std": (set_path("norm_stats.actions.std", [-1.0] * 14), "actions.std hold negative values"),
    "step not a number": (set_path("step", "x"), "checkpoint.json is unreadable"),
    "all-NaN weights": (edit_weights(nan_everywhere), "weight tensor(s) hold NaN or inf"),
    "one inf weight": (edit_weights(one_inf), "1 weight tensor(s) hold NaN or inf"),
    "half a weight file": (truncate(MODEL_FILE, 5000), MODEL_FILE),
    "garbage meta": (truncate(META_FILE, 40), "checkpoint.json is unreadable"),
}


@pytest.fixture
def damaged(checkpoint: Path, tmp_path: Path) -> Callable[[Damage], Path]:
    def make(damage: Damage) -> Path:
        folder = tmp_path / "checkpoint"
        shutil.copytree(checkpoint, folder)
        damage(folder)
        return folder

    return make


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_checkpoint_is_refused_when_opened(damaged: Callable[[Damage], Path], case: str) -> None:
    damage, message = DAMAGES[case]
    folder = damaged(damage)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as refused:
        load_policy(folder)
    assert time.monotonic() - start < 10  # no runaway allocation on the way to the refusal
    text = str(refused.value)
    assert text.startswith(f"checkpoint {folder}") and message in text, text


def test_rig_serve_refuses_a_damaged_checkpoint_in_one_line(
    damaged: Callable[[Damage], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = damaged(DAMAGES["all-NaN weights"][0])
    assert main(["serve", "--checkpoint", str(folder), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("rig serve: checkpoint ") and "NaN" in error and error.count("\n") == 1
