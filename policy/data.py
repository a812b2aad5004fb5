"""π0 training data from the episode store: windows -> model-ready samples -> `TrainingBatch`es.

A sample is one step of one episode: each camera view's frame at that step in the model's slot
order (a camera the episode lacks is a masked, black slot), the prompt's tokens, the state, and the
next `action_horizon` actions, normalized and zero-padded to the model's `action_dim`. Frames come
from the decoded-frame cache (policy.frame_cache), built once per episode and view, so training
decodes no video. Augmentation is not done here but on the batch (`augment_batch`), where it runs
vectorized on the training device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from policy.batch import Pi0Inputs, TrainingBatch
from policy.config import Pi0Config
from policy.frame_cache import cached_frames
from policy.images import augment_images
from policy.normalize import Normalizer
from policy.tokenizer import Tokenizer
from policy.transform import DataConfig, model_images
from recorder.reader import WindowReader
from rig.step import STATE_DIM

__all__ = [
    "DataConfig",
    "Pi0Dataset",
    "augment_batch",
    "batches",
    "collate",
    "make_loader",
]

Sample = dict[str, torch.Tensor]


def pad_last(x: np.ndarray, width: int) -> np.ndarray:
    """Zero-pad the last axis to `width` (π0 reads every robot's vectors at one width)."""
    if x.shape[-1] > width:
        raise ValueError(f"vectors of {x.shape[-1]} dimensions do not fit the model's {width}")
    padded = np.zeros((*x.shape[:-1], width), np.float32)
    padded[..., : x.shape[-1]] = x
    return padded


class Pi0Dataset(Dataset[Sample]):
    """Every step of the store's training episodes (or the listed ones) as a π0 sample.

    The frame caches are built (or found fresh) when the dataset is made, in the calling process;
    a worker process that gets the dataset maps them itself rather than inheriting open maps."""

    def __init__(
        self,
        root: Path,
        config: Pi0Config,
        data: DataConfig,
        normalizer: Normalizer,
        tokenizer: Tokenizer,
        episodes: Sequence[int] | None = None,
        say: Callable[[str], None] | None = None,
        include_flagged: bool = False,
    ) -> None:
        if config.action_dim < STATE_DIM:
            raise ValueError(
                f"π0 config {config.name}: action_dim {config.action_dim} < the robot's {STATE_DIM}"
            )
        self.root, self.config, self.data = Path(root), config, data
        self.normalizer, self.tokenizer = normalizer, tokenizer
        self.reader = WindowReader(
            self.root,
            episodes,
            horizon=config.action_horizon,
            cameras=data.cameras,
            open_episodes=1 << 30,
            include_flagged=include_flagged,
        )
        self._frames: dict[tuple[int, int], np.ndarray] = {}
        self._length = len(self.reader)
        self._build_caches(say)

    def _build_caches(self, say: Callable[[str], None] | None) -> None:
        announced = False

        def announce(video: Path) -> None:
            nonlocal announced
            if say is not None and not announced:
                say(f"decoding the videos once into {self.root / 'cache'}; training then reads no video")
                announced = True

        for episode_id in self.reader.episode_ids:
            self._episode_frames(episode_id, on_build=announce)

    def _episode_frames(
        self, episode_id: int, on_build: Callable[[Path], None] | None = None
    ) -> list[np.ndarray | None]:
        episode = self.reader.episode(episode_id)
        frames: list[np.ndarray | None] = []
        for slot, view in enumerate(self.data.views):
            key = (episode_id, slot)
            if key not in self._frames:
                if view.camera not in episode.cameras:
                    frames.append(None)
                    continue
                self._frames[key] = cached_frames(
                    self.root, episode.folder, view, self.config.vision.image_size, on_build
                )
            frames.append(self._frames[key])
        return frames

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"] = {}  # maps do not travel to a spawned worker; it maps the files again
        return state

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, item: int) -> Sample:
        episode_id, index = self.reader.locate(item)
        episode = self.reader.episode(episode_id)
        window = episode.window(index, self.config.action_horizon, images=False)
        size = self.config.vision.image_size
        slots = []
        for view, frames in zip(self.data.views, self._episode_frames(episode_id), strict=True):
            if frames is None:
                slots.append(np.zeros((size, size, 3), np.uint8))
            else:
                slots.append(frames[episode.video_index(view.camera, index, len(frames))])
        tokens, token_masks = self.tokenizer.encode(self.data.prompt or window.task)
        width = self.config.action_dim
        return {
            "images": model_images(torch.from_numpy(np.stack(slots))),
            "image_masks": torch.tensor([view.camera in episode.cameras for view in self.data.views]),
            "tokens": torch.from_numpy(tokens),
            "token_masks": torch.from_numpy(token_masks),
            "state": torch.from_numpy(pad_last(self.normalizer.normalize_state(window.state), width)),
            "actions": torch.from_numpy(pad_last(self.normalizer.normalize_actions(window.actions), width)),
            "action_is_pad": torch.from_numpy(window.action_is_pad),
        }

    def close(self) -> None:
        self.reader.close()
        self._frames.clear()


def collate(samples: Sequence[Mapping[str, torch.Tensor]]) -> TrainingBatch:
    """Stack samples into a batch; the action mask marks the robot's real dimensions."""
    stacked = {name: torch.stack([s[name] for s in samples]) for name in samples[0]}
    action_dim_mask = torch.arange(stacked["actions"].shape[-1]) < STATE_DIM
    inputs = Pi0Inputs(
        stacked["images"], stacked["image_masks"], stacked["tokens"], stacked["token_masks"], stacked["state"]
    ).without_trailing_padding()
    return TrainingBatch(inputs, stacked["actions"], stacked["action_is_pad"], action_dim_mask)


def augment_batch(
    batch: TrainingBatch, data: DataConfig, generator: torch.Generator | None = None
) -> TrainingBatch:
    """The batch as training varies it (on the batch's device): image augmentations when
    `data.augment` is on, and the state blanked (its mean) for a `data.state_dropout` share of samples."""
    inputs = batch.inputs
    if data.augment:
        images = augment_images(inputs.images, data.is_wrist(), generator, data.augmentation)
        inputs = dataclasses.replace(inputs, images=images)
    if data.state_dropout > 0:
        where = generator.device if generator is not None else inputs.state.device
        dropped = torch.rand(inputs.batch_size, generator=generator, device=where) < data.state_dropout
        keep = (~dropped).to(inputs.state.device, inputs.state.dtype)[:, None]
        inputs = dataclasses.replace(inputs, state=inputs.state * keep)
    return batch if inputs is batch.inputs else dataclasses.replace(batch, inputs=inputs)


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
    say: Callable[[str], None] | None = None,
    include_flagged: bool = False,
    pin_memory: bool = False,
) -> DataLoader[Sample]:
    """Shuffled (by `seed`, reshuffled by `batches` each epoch) and sharded across ranks: each rank
    reads a disjoint share of the same size, in full batches, so DDP ranks step in lockstep.
    `pin_memory` (for a GPU) lets each batch's copy to the device overlap the running step."""
    dataset = Pi0Dataset(root, config, data, normalizer, tokenizer, episodes, say, include_flagged)
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
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_one_thread if workers > 0 else None,
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


def _one_thread(_: int) -> None:
    """A loader worker copies frames; torch's default of a thread per core in every worker only makes
    them fight the training process for the cores."""
    torch.set_num_threads(1)


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
