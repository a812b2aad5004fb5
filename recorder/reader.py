"""Training windows: random access to (state at t, the next actions, each camera's frame at t).

Videos are read by seeking to the keyframe before the wanted frame and decoding forward (a keyframe
every few frames keeps that short), never by decoding a whole episode. Episodes are opened lazily
and a few are kept open, so a data loader worker that jumps between episodes stays cheap.

Training reads demonstrations: complete episodes, less those tagged as something else (`eval`, a
policy's rollout kept to judge it) and those flagged as no demonstration at all (the arms faulted,
held or never moved: recorder/quality.py), unless asked otherwise (`exclude_tags`, `include_flagged`).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recorder.catalogue import TRAINING_EXCLUDES
from recorder.steps import read_steps
from recorder.store import catalogue_of
from recorder.video import VideoReader


@dataclass(frozen=True, eq=False)
class Window:
    episode_id: int
    index: int  # the step within the episode
    task: str
    state: np.ndarray  # (14,) float32: qpos at the step
    actions: (
        np.ndarray
    )  # (horizon, 14) float32: the actions from this step on, the last one repeated past the end
    action_is_pad: np.ndarray  # (horizon,) bool: True where the episode had ended
    images: Mapping[str, np.ndarray]  # camera -> (h, w, 3) uint8, the frame recorded with the step


class EpisodeData:
    """One episode's steps (in memory) and videos (opened on first use)."""

    def __init__(self, folder: Path, episode_id: int, task: str, cameras: Sequence[str]) -> None:
        self.episode_id, self.task, self.folder = episode_id, task, folder
        self.steps = read_steps(folder)
        self.cameras = list(cameras)
        self._videos: dict[str, VideoReader] = {}

    def __len__(self) -> int:
        return len(self.steps)

    def frame(self, camera: str, index: int) -> np.ndarray:
        video = self._videos.get(camera)
        if video is None:
            video = self._videos[camera] = VideoReader(self.folder / f"{camera}.mp4")
        return video.frame(self.video_index(camera, index, len(video)))

    def video_index(self, camera: str, index: int, frames: int) -> int:
        """The video frame recorded with step `index`: the step's own index unless frames were dropped,
        in which case the record says where its frame went (or the nearest earlier one that is in the
        video: a killed recording's last steps point past the end of its file)."""
        field = f"{camera}/video_index"
        if field in (self.steps.dtype.names or ()):
            known = self.steps[field][: index + 1]
            valid = known[(known >= 0) & (known < frames)]
            return int(valid[-1]) if len(valid) else 0
        return min(index, frames - 1)

    def window(self, index: int, horizon: int, images: bool = True) -> Window:
        """The training window at step `index`; `images=False` leaves the frames to the caller
        (who reads them from a cache of decoded frames)."""
        count = len(self.steps)
        if not 0 <= index < count:
            raise IndexError(f"episode {self.episode_id} has {count} steps, not {index + 1}")
        take = np.arange(index, index + horizon)
        pad = take >= count
        actions = self.steps["action"][np.minimum(take, count - 1)].astype(np.float32)
        frames = {camera: self.frame(camera, index) for camera in self.cameras} if images else {}
        return Window(
            self.episode_id,
            index,
            self.task,
            self.steps["qpos"][index].astype(np.float32),
            actions,
            pad,
            frames,
        )

    def close(self) -> None:
        for video in self._videos.values():
            video.close()
        self._videos.clear()


class WindowReader:
    """All steps of a store's complete episodes (all, or those in `episodes`) that carry none of
    `exclude_tags` and, unless `include_flagged`, no quality flag, as one indexable sequence of
    training windows."""

    def __init__(
        self,
        root: Path,
        episodes: Sequence[int] | None = None,
        horizon: int = 50,
        cameras: Sequence[str] | None = None,
        open_episodes: int = 8,
        exclude_tags: Sequence[str] = TRAINING_EXCLUDES,
        include_flagged: bool = False,
    ) -> None:
        self.root = Path(root)
        self.horizon = horizon
        self._meta = {}
        with catalogue_of(self.root) as catalogue:
            records = catalogue.training_episodes(episodes, exclude_tags, include_flagged)
            for record in records:
                names = [s.camera for s in catalogue.streams(record.id)]
                self._meta[record.id] = (
                    record.task,
                    names if cameras is None else [c for c in names if c in cameras],
                )
        self.episode_ids = [r.id for r in records]
        self._starts = np.cumsum([0] + [r.steps for r in records])
        self._open: collections.OrderedDict[int, EpisodeData] = collections.OrderedDict()
        self._open_limit = open_episodes

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, item: int) -> tuple[int, int]:
        """(episode id, step within it) of the item-th window."""
        if not 0 <= item < len(self):
            raise IndexError(f"{item} is outside 0..{len(self) - 1}")
        position = int(np.searchsorted(self._starts, item, side="right")) - 1
        return self.episode_ids[position], item - int(self._starts[position])

    def episode(self, episode_id: int) -> EpisodeData:
        data = self._open.get(episode_id)
        if data is None:
            task, names = self._meta[episode_id]
            data = EpisodeData(self.root / "episodes" / f"{episode_id:06d}", episode_id, task, names)
            self._open[episode_id] = data
            if len(self._open) > self._open_limit:
                _, oldest = self._open.popitem(last=False)
                oldest.close()
        else:
            self._open.move_to_end(episode_id)
        return data

    def __getitem__(self, item: int) -> Window:
        episode_id, index = self.locate(item)
        return self.episode(episode_id).window(index, self.horizon)

    def close(self) -> None:
        for data in self._open.values():
            data.close()
        self._open.clear()
