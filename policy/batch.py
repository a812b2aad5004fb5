"""The tensors π0 consumes, as one record shared by the data pipeline, the model and the server."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True, eq=False)
class Pi0Inputs:
    """An observation, batched. Cameras are slots in a fixed order; a missing camera is a masked slot."""

    images: torch.Tensor  # (b, cameras, 3, h, w) float32 in [-1, 1]
    image_masks: torch.Tensor  # (b, cameras) bool: False where the camera is missing
    tokens: torch.Tensor  # (b, max_token_len) int64 prompt tokens
    token_masks: torch.Tensor  # (b, max_token_len) bool: False on padding
    state: torch.Tensor  # (b, action_dim) float32, normalized and zero-padded

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])

    def to(self, device: torch.device | str) -> Pi0Inputs:
        return Pi0Inputs(
            **{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)}
        )

    def pin_memory(self) -> Pi0Inputs:
        """Page-locked copies (the DataLoader calls this with pin_memory), so `to(cuda)` is asynchronous."""
        return Pi0Inputs(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def select(self, index: slice | torch.Tensor) -> Pi0Inputs:
        """A sub-batch (e.g. one DDP rank's share)."""
        return Pi0Inputs(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def without_trailing_padding(self) -> Pi0Inputs:
        """The inputs with the prompt's padding columns that no sample uses cut off. Exact: padding is
        masked out of attention and comes after every real token, so no position changes; but a short
        prompt padded to `max_token_len` no longer costs the language model those tokens (a 19-token
        prompt in 32 slots beside 16 image tokens: 13 of the prefix's 48)."""
        used = self.token_masks.any(dim=0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1
        if width == self.tokens.shape[1]:
            return self
        return dataclasses.replace(
            self, tokens=self.tokens[:, :width], token_masks=self.token_masks[:, :width]
        )


@dataclass(frozen=True, eq=False)
class TrainingBatch:
    inputs: Pi0Inputs
    actions: torch.Tensor  # (b, horizon, action_dim) float32, normalized and zero-padded
    action_is_pad: torch.Tensor  # (b, horizon) bool: True past the episode's end
    action_dim_mask: torch.Tensor  # (action_dim,) bool: True on the robot's real dimensions

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(
            self.inputs.to(device),
            self.actions.to(device, non_blocking=True),
            self.action_is_pad.to(device, non_blocking=True),
            self.action_dim_mask.to(device, non_blocking=True),
        )

    def pin_memory(self) -> TrainingBatch:
        return TrainingBatch(
            self.inputs.pin_memory(),
            self.actions.pin_memory(),
            self.action_is_pad.pin_memory(),
            self.action_dim_mask.pin_memory(),
        )

    def select(self, index: slice | torch.Tensor) -> TrainingBatch:
        return TrainingBatch(
            self.inputs.select(index), self.actions[index], self.action_is_pad[index], self.action_dim_mask
        )
