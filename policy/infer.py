"""A π0 checkpoint as a `Policy` in this process: observation → normalized tensors → chunk → robot units.

Inference runs the prefix (cameras + prompt) once and the action expert `num_steps` times over its
cached keys/values; with `Guidance` the chunk is inpainted toward the previous one (policy.rtc).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from policy.batch import Pi0Inputs
from policy.checkpoint import CheckpointMeta, load_policy
from policy.data import pad_last
from policy.fast_inference import blank_inputs, prepare_for_inference
from policy.interface import Guidance, PolicyInfo, PolicyObservation
from policy.pi0 import Pi0
from policy.rtc import DEFAULT_BETA, guided_sample, soft_mask
from policy.tokenizer import Tokenizer, make_tokenizer
from policy.transform import view_images
from rig.step import STATE_DIM


class PolicyOutputError(RuntimeError):
    """The model produced something that must not reach the arms (NaN, inf)."""


class LocalPolicy:
    def __init__(
        self,
        model: Pi0,
        meta: CheckpointMeta,
        tokenizer: Tokenizer,
        beta: float = DEFAULT_BETA,
        seed: int | None = None,
    ) -> None:
        self.model, self.meta, self.tokenizer, self.beta = model.eval(), meta, tokenizer, beta
        self.device = next(model.parameters()).device
        self._generator = torch.Generator(device=self.device)
        if seed is not None:
            self._generator.manual_seed(seed)
        else:
            self._generator.seed()

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        device: str | None = None,
        tokenizer_path: Path | None = None,
        seed: int | None = None,
        compile: bool = False,
    ) -> LocalPolicy:
        """bf16 weights where bf16 is fast; `compile`: the denoising step compiled (both in
        policy.fast_inference), and compiled here, by a warm-up chunk, rather than on the first request."""
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, meta = load_policy(path, chosen)
        given = tokenizer_path or (Path(meta.tokenizer_path) if meta.tokenizer_path else None)
        policy = cls(
            prepare_for_inference(model, compile), meta, make_tokenizer(meta.config, given), seed=seed
        )
        if compile:
            policy.warm_up()
        return policy

    def warm_up(self) -> None:
        """One chunk with and one without guidance on blank inputs: compiles, picks kernels."""
        inputs = blank_inputs(self.model, len(self.meta.data.views))
        config = self.meta.config
        noise = torch.zeros(1, config.action_horizon, config.action_dim, device=self.device)
        horizon = config.action_horizon
        with self.model.autocast():
            self.model.sample_actions(inputs, noise)
            guided_sample(self.model, inputs, torch.zeros_like(noise), torch.ones(horizon), noise)

    def info(self) -> PolicyInfo:
        config = self.meta.config
        return PolicyInfo(
            config=config.name,
            cameras=self.meta.data.cameras,
            crops=tuple(view.crop for view in self.meta.data.views),
            image_size=config.vision.image_size,
            action_dim=STATE_DIM,
            action_horizon=config.action_horizon,
            num_steps=config.num_steps,
            step=self.meta.step,
            tasks=self.meta.tasks,
        )

    def inputs(self, observation: PolicyObservation) -> Pi0Inputs:
        """One observation as a batch of one on the model's device."""
        images, image_masks = view_images(
            observation.images, self.meta.data.views, self.meta.config.vision.image_size
        )
        tokens, token_mask = self.tokenizer.encode(self.meta.data.prompt or observation.prompt)
        state = self.meta.normalizer.normalize_state(np.asarray(observation.state, dtype=np.float32))
        return Pi0Inputs(
            images=images[None],
            image_masks=image_masks[None],
            tokens=torch.from_numpy(tokens)[None],
            token_masks=torch.from_numpy(token_mask)[None],
            state=torch.from_numpy(pad_last(state, self.meta.config.action_dim))[None],
        ).to(self.device)

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        config = self.meta.config
        inputs = self.inputs(observation)
        noise = self.model.noise(1, self.device, self._generator)
        with self.model.autocast():
            if guidance is None:
                chunk = self.model.sample_actions(inputs, noise)
            else:
                target, weights = self._guidance_target(guidance)
                chunk = guided_sample(self.model, inputs, target, weights, noise, beta=self.beta)
        actions = self.meta.normalizer.unnormalize_actions(chunk[0, :, :STATE_DIM].float().cpu().numpy())
        if not np.all(np.isfinite(actions)):
            raise PolicyOutputError(
                f"π0 ({config.name}, step {self.meta.step}) returned non-finite actions; the rig holds. "
                "Check the checkpoint (retrain from an earlier one) or the observation (a dead camera?)"
            )
        return actions.astype(np.float64)

    def _guidance_target(self, guidance: Guidance) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.meta.config
        horizon, available = config.action_horizon, min(len(guidance.actions), config.action_horizon)
        normalized = self.meta.normalizer.normalize_actions(
            np.asarray(guidance.actions[:available], np.float32)
        )
        target = np.zeros((horizon, config.action_dim), np.float32)
        target[:available, :STATE_DIM] = normalized
        weights = soft_mask(horizon, guidance.frozen, guidance.execute, available)[:, None].repeat(
            1, config.action_dim
        )
        weights[:, STATE_DIM:] = 0.0
        return torch.from_numpy(target)[None], weights
