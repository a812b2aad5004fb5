"""Evaluation on the twin: only what the policy sees is rendered, results do not depend on the
machine's speed, and `rig train --eval-every` draws the success curve while it trains."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import write_synthetic_store

from hardware.profile import load_profile
from policy.interface import Guidance, PolicyInfo, PolicyObservation
from policy.progress import read_eval_log
from recorder.catalogue import Catalogue
from recorder.steps import read_steps
from recorder.store import Store
from rig.app.evaluate import EVAL_STORE, EvalSettings, evaluate, evaluate_checkpoints, policy_cameras

RIG = [sys.executable, "-m", "rig.cli"]


def info(
    cameras: tuple[str, ...], crops: tuple[tuple[float, float, float, float], ...], size: int
) -> PolicyInfo:
    return PolicyInfo("pi0-tiny", cameras, 14, 10, 10, 0, crops=crops, image_size=size)


def test_the_twin_renders_only_the_policys_cameras_just_large_enough_and_at_the_asked_rate() -> None:
    profile = load_profile("aloha-sim")  # three cameras of 320x240 at 50 fps
    seen = policy_cameras(profile, info(("cam_high",), ((0.25, 0.0, 0.75, 0.5),), 112), camera_hz=10)
    assert list(seen.cameras) == ["cam_high"]
    top = seen.cameras["cam_high"]
    assert (top.width, top.height, top.fps) == (224, 168, 10)  # the crop's 160 px wide -> 112
    two = info(("cam_high", "cam_high"), ((0.25, 0.0, 0.75, 0.5), (0.4, 0.4, 0.6, 0.6)), 112)
    assert (
        policy_cameras(profile, two, 10).cameras["cam_high"].width,
        len(policy_cameras(profile, two, 10).cameras),
    ) == (320, 1)  # the tighter view needs every pixel
    whole = policy_cameras(profile, info(("cam_high", "cam_left_wrist"), (), 0), camera_hz=100)
    assert [(c.width, c.height, c.fps) for c in whole.cameras.values()] == [(320, 240, 50)] * 2
    with pytest.raises(ValueError, match="cam_nowhere"):
        policy_cameras(profile, info(("cam_nowhere",), (), 0), camera_hz=10)


class Hesitant:
    """A stand-in policy that answers after a random wall-clock pause, as a model does on a loaded
    machine; its chunks lead the arms from where they are by a small, fixed way."""

    def __init__(self, seed: int) -> None:
        self._pauses = np.random.default_rng(seed)

    def info(self) -> PolicyInfo:
        return info(("cam_high",), ((0.25, 0.25, 0.75, 0.75),), 32)

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        assert set(observation.images) == {"cam_high"}
        time.sleep(float(self._pauses.uniform(0.0, 0.05)))
        steps = np.arange(1, 11)[:, None] * 0.002
        return np.asarray(observation.state)[None, :] + steps * np.sign(np.arange(14) % 2 - 0.5)


def test_an_evaluation_is_the_same_whatever_the_machine_does_meanwhile(tmp_path: Path) -> None:
    """Inference happens inside the tick with a fixed simulated latency, so two runs of the same
    seeds send the same actions however long the policy took on the wall clock."""
    profile = load_profile("aloha-sim")
    settings = EvalSettings(episodes=1, seed=3, episode_s=1.0, delay_ticks=3)
    actions = []
    for attempt in range(2):
        policy = Hesitant(seed=attempt)
        with Store(tmp_path / f"store{attempt}") as store:
            report = evaluate(policy, policy.info(), profile, store, settings, say=lambda _: None)
            (outcome,) = report.outcomes
            actions.append(read_steps(store.episode_dir(outcome.episode_id))["action"])
    assert outcome.seed == 3 and outcome.chunks > 3 and len(actions[0]) > 40
    np.testing.assert_array_equal(actions[0], actions[1])


def test_rig_train_evaluates_its_checkpoints_while_it_trains(tmp_path: Path) -> None:
    store = write_synthetic_store(tmp_path / "store", episodes=2, steps=40)
    run = tmp_path / "run"
    result = subprocess.run(
        [*RIG, "train", "--store", str(store), "--config", "pi0-tiny", "--steps", "2", "--batch-size", "4",
         "--out", str(run), "--eval-every", "1", "--eval-episodes", "1", "--eval-episode-time", "0.5"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "eval at step 1: " in result.stdout and "eval at step 2: " in result.stdout
    logged = read_eval_log(run / "eval.csv")
    assert [r.step for r in logged] == [1, 2] and all(r.episodes == 1 for r in logged)
    assert (run / "success.png").exists()
    catalogue = Catalogue(run / EVAL_STORE / "catalogue.db")
    assert [e.tags for e in catalogue.episodes()] == [("eval",), ("eval",)]
    assert dataclasses.replace(EvalSettings(), episodes=2).episodes == 2


def test_an_evaluation_that_fails_during_training_says_so_and_lets_training_go_on(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "00000010"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"not a checkpoint")
    said: list[str] = []
    profile = load_profile("aloha-sim")
    hook = evaluate_checkpoints(profile, EvalSettings(episodes=1), every=10, say=said.append)
    hook(checkpoint, 10)  # returns: the training loop that called it carries on
    assert len(said) == 1 and said[0].startswith("eval at step 10 failed (")
    assert f"rig eval --checkpoint {checkpoint}" in said[0]
    assert not (tmp_path / "run" / "eval.csv").exists()
