"""π0 training data from the episode store: windows -> model-ready samples -> `TrainingBatch`es.

A sample is one step of one episode: the cameras' frames at that step in the model's slot order
(a camera the episode lacks is a masked, black slot), the prompt's tokens, the state, and the next
`action_horizon` actions, normalized and zero-padded to the model's `action_dim`. Augmentation is
not done here but on the batch (`augment_batch`), where it runs vectorized on the training device.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from policy.batch import Pi0Inputs, TrainingBatch
from policy.config import Pi0Config
from policy.images import BLACK, augment_images, resize_with_pad, to_model_image
from policy.normalize import Normalizer
from policy.tokenizer import Tokenizer
from recorder.reader import WindowReader
from rig.step import STATE_DIM

__all__ = [
    "DataConfig",
    "Pi0Dataset",
    "augment_batch",
    "augment_images",
    "batches",
    "collate",
    "is_wrist",
    "make_loader",
    "resize_with_pad",
    "to_model_image",
]

Sample = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DataConfig:
    cameras: tuple[str, ...] = ("cam_high", "cam_left_wrist", "cam_right_wrist")  # slot order; 0 is the top
    augment: bool = True
    prompt: str | None = None  # used instead of each episode's task text


def is_wrist(cameras: Sequence[str]) -> tuple[bool, ...]:
    """Which slots hold wrist cameras, by name as openpi decides it."""
    return tuple("wrist" in camera for camera in cameras)


def pad_last(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad the last axis to `width` (π0 reads every robot's vectors at one width)."""
    if x.shape[-1] > width:
        raise ValueError(f"vectors of {x.shape[-1]} dimensions do not fit the model's {width}")
    padded = np.zeros((*x.shape[:-1], width), np.float32)
    padded[..., : x.shape[-1]] = x
    return padded


class Pi0Dataset(Dataset[Sample]):
    """Every step of the store's complete episodes (or the listed ones) as a π0 sample.

    Videos are opened lazily by whichever process reads: each DataLoader worker opens its own
    `WindowReader` on first use rather than sharing decoders forked from the parent."""

    def __init__(
        self,
        root: Path,
        config: Pi0Config,
        data: DataConfig,
        normalizer: Normalizer,
        tokenizer: Tokenizer,
        episodes: Sequence[int] | None = None,
    ) -> None:
        if config.action_dim < STATE_DIM:
            raise ValueError(
                f"π0 config {config.name}: action_dim {config.action_dim} < the robot's {STATE_DIM}"
            )
        self.root, self.config, self.data = Path(root), config, data
        self.normalizer, self.tokenizer = normalizer, tokenizer
        self.episodes = None if episodes is None else list(episodes)
        self._reader: WindowReader | None = None
        self._reader_pid = -1
        self._length = len(self.reader)

    @property
    def reader(self) -> WindowReader:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = WindowReader(
                self.root, self.episodes, horizon=self.config.action_horizon, cameras=self.data.cameras
            )
            self._reader_pid = os.getpid()
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_reader"] = None  # open decoders do not travel to a spawned worker
        return state

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, item: int) -> Sample:
        window = self.reader[item]
        size = self.config.vision.image_size
        blank = torch.full((3, size, size), BLACK)
        images = [
            to_model_image(window.images[camera], size) if camera in window.images else blank
            for camera in self.data.cameras
        ]
        tokens, token_masks = self.tokenizer.encode(self.data.prompt or window.task)
        width = self.config.action_dim
        return {
            "images": torch.stack(images),
            "image_masks": torch.tensor([camera in window.images for camera in self.data.cameras]),
            "tokens": torch.from_numpy(tokens),
            "token_masks": torch.from_numpy(token_masks),
            "state": torch.from_numpy(pad_last(self.normalizer.normalize_state(window.state), width)),
            "actions": torch.from_numpy(pad_last(self.normalizer.normalize_actions(window.actions), width)),
            "action_is_pad": torch.from_numpy(window.action_is_pad),
        }

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def collate(samples: Sequence[Mapping[str, torch.Tensor]]) -> TrainingBatch:
    """Stack samples into a batch; the action mask marks the robot's real dimensions."""
    stacked = {name: torch.stack([s[name] for s in samples]) for name in samples[0]}
    action_dim_mask = torch.arange(stacked["actions"].shape[-1]) < STATE_DIM
    inputs = Pi0Inputs(
        stacked["images"], stacked["image_masks"], stacked["tokens"], stacked["token_masks"], stacked["state"]
    )
    return TrainingBatch(inputs, stacked["actions"], stacked["action_is_pad"], action_dim_mask)


def augment_batch(
    batch: TrainingBatch, data: DataConfig, generator: torch.Generator | None = None
) -> TrainingBatch:
    """The batch with openpi's image augmentations when `data.augment` is on (on the batch's device)."""
    if not data.augment:
        return batch
    images = augment_images(batch.inputs.images, is_wrist(data.cameras), generator)
    return dataclasses.replace(batch, inputs=dataclasses.replace(batch.inputs, images=images))


def make_loader(
    root: Path,
    config: Pi0Config,
    data: DataConfig,
    normalizer: Normalizer,
    tokenizer: Tokenizer,
    batch_size: int,
    *,
    workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    episodes: Sequence[int] | None = None,
) -> DataLoader[Sample]:
    """Shuffled (by `seed`, reshuffled by `batches` each epoch) and sharded across ranks: each rank
    reads a disjoint share of the same size, in full batches, so DDP ranks step in lockstep."""
    dataset = Pi0Dataset(root, config, data, normalizer, tokenizer, episodes)
    sampler: DistributedSampler[Sample] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        persistent_workers=workers > 0,
        # Forking a process that already runs torch's and FFmpeg's threads can crash the child
        # (a segfault seen on CI); spawned workers start clean and persist across epochs.
        multiprocessing_context="spawn" if workers > 0 else None,
    )
    if not len(loader):
        raise ValueError(
            f"{root}: {len(dataset)} windows give rank {rank} of {world_size} {len(sampler)}, "
            f"not one batch of {batch_size}; record more or lower the batch size"
        )
    return loader


def batches(loader: DataLoader[Sample]) -> Iterator[TrainingBatch]:
    """The loader's batches, epoch after epoch without end, reshuffled each epoch."""
    if not len(loader):
        raise ValueError("the loader yields no batches")
    epoch = 0
    while True:
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
