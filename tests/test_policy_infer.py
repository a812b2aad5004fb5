"""π0 as a policy: a checkpoint's chunk in robot units, RTC's inpainting, and NaN refused."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_store import write_synthetic_store
from test_policy_model import inputs_for, randomized

from policy.checkpoint import load_policy
from policy.infer import LocalPolicy, PolicyOutputError
from policy.interface import Guidance, PolicyObservation
from policy.rtc import guidance_weight, guided_sample, soft_mask
from policy.tokenizer import make_tokenizer
from policy.train import TrainSettings, train
from recorder.reader import WindowReader


def observation(
    cameras: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist"),
) -> PolicyObservation:
    images = {name: np.full((48, 64, 3), 30 * i, np.uint8) for i, name in enumerate(cameras)}
    return PolicyObservation(np.linspace(-0.5, 0.5, 14), images, "transfer the cube")


def test_a_checkpoint_gives_chunks_in_robot_units(checkpoint: Path) -> None:
    policy = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0)
    info = policy.info()
    assert info.config == "pi0-tiny" and info.action_dim == 14 and info.tasks == ("transfer the cube",)
    chunk = policy.infer(observation())
    assert chunk.shape == (info.action_horizon, 14) and np.isfinite(chunk).all()
    again = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0).infer(observation())
    assert np.allclose(chunk, again)  # seeded sampling is reproducible
    assert policy.infer(observation(("cam_high",))).shape == chunk.shape  # missing cameras are masked


def test_a_compiled_denoising_step_gives_the_eager_chunks(checkpoint: Path) -> None:
    """`rig serve --compile`: compiled (and warmed up) at load, then the same chunks, guided or not."""
    eager = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0)
    compiled = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0, compile=True)
    horizon = eager.info().action_horizon
    old = Guidance(np.tile(np.linspace(-0.3, 0.3, 14), (horizon, 1)), 3, 3)
    for guidance in (None, old):
        np.testing.assert_allclose(
            compiled.infer(observation(), guidance), eager.infer(observation(), guidance), atol=1e-2
        )  # fused kernels round differently (in bf16 where this CPU computes in it): ≤ 0.01 rad


def test_guidance_makes_the_new_chunk_continue_the_old_one(checkpoint: Path) -> None:
    policy = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0)
    horizon = policy.info().action_horizon
    old = np.tile(np.linspace(-0.3, 0.3, 14), (horizon, 1)) + np.linspace(0, 0.2, horizon)[:, None]
    free = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=1).infer(observation())
    guided = LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=1).infer(observation(), Guidance(old, 3, 3))
    frozen_error = np.abs(guided[:3] - old[:3]).mean()
    assert frozen_error < 0.2 * np.abs(free[:3] - old[:3]).mean()


def test_the_soft_mask_and_the_guidance_weight() -> None:
    mask = soft_mask(10, frozen=3, execute=3).tolist()
    assert mask[:3] == [1.0, 1.0, 1.0] and mask[7:] == [0.0, 0.0, 0.0]
    assert all(a > b for a, b in itertools.pairwise(mask[2:7]))  # fades out
    assert soft_mask(10, 3, 3, available=5).tolist()[5:] == [0.0] * 5
    assert guidance_weight(1.0, 5.0) == 5.0 and guidance_weight(0.5, 5.0) == pytest.approx(2.0)


def test_guidance_pulls_toward_the_target_not_away() -> None:
    """The sign convention: openpi's t = 1 is noise; a flipped guidance term pushes the chunk away."""
    model = randomized("pi0-tiny")
    inputs = inputs_for("pi0-tiny", batch=1)
    target = torch.randn(1, 10, 32)
    noise = model.noise(1, "cpu", torch.Generator().manual_seed(0))
    weights = soft_mask(10, 4, 3)
    free = model.sample_actions(inputs, noise)
    guided = guided_sample(model, inputs, target, weights, noise)
    assert (guided - target)[0, :4].abs().mean() < 0.1 * (free - target)[0, :4].abs().mean()
    assert torch.allclose(guided[0, 7:], free[0, 7:], atol=0.1)  # zero weight: the model's own plan


def test_a_policy_that_returns_nan_is_refused(checkpoint: Path) -> None:
    model, meta = load_policy(checkpoint)
    with torch.no_grad():
        model.action_out_proj.bias.fill_(float("nan"))
    policy = LocalPolicy(model, meta, make_tokenizer(meta.config), seed=0)
    with pytest.raises(PolicyOutputError, match="non-finite"):
        policy.infer(observation())


@pytest.mark.slow
def test_a_policy_that_memorized_an_episode_replays_its_actions(tmp_path: Path) -> None:
    """Store → reader → normalization → training → checkpoint → inference → robot units, end to end:
    any mismatch between the training and the inference pipelines shows up as a large error."""
    root = write_synthetic_store(tmp_path / "store", episodes=1, steps=40)
    settings = TrainSettings(store=root, config="pi0-tiny", steps=600, batch_size=16, workers=0, lr=3e-3,
                             warmup_steps=20, augment=False, out=root / "run")  # fmt: skip
    policy = LocalPolicy.from_checkpoint(train(settings, say=lambda _: None).checkpoint, "cpu", seed=0)
    reader = WindowReader(root, horizon=policy.info().action_horizon)
    for index in (0, 15, 30):
        window = reader[index]
        chunk = policy.infer(PolicyObservation(window.state, dict(window.images), window.task))
        real = ~window.action_is_pad
        spread = np.abs(window.actions[real] - window.actions[real].mean()).mean()
        assert np.abs(chunk[real] - window.actions[real]).mean() < 0.15 * spread
