"""Decoded frames for training: each episode's video, seen through one camera view, decoded once.

Decoding H.264 costs more than a small model's step on a CPU, and training visits every frame of
every episode many times. So each (episode, camera view, model size) is decoded once, passed
through `view_frame`, and kept as a uint8 `.npy` file beside the store's episodes
(`<store>/cache/frames/<episode>/…`); training memory-maps it. A cache file names the video's size
and modification time it was built from and is rebuilt when the video changes (an import, a
re-encode). It is written to a temporary name and renamed, so a crash never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from policy.transform import CameraView, view_frame
from recorder.video import VideoReader

CACHE_DIR = Path("cache") / "frames"


def _fingerprint(video: Path) -> dict[str, int]:
    stat = video.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_path(store: Path, episode_folder: Path, view: CameraView, size: int) -> Path:
    key = hashlib.sha1(f"{view.describe()}|{size}".encode()).hexdigest()[:12]
    return Path(store) / CACHE_DIR / episode_folder.name / f"{view.camera}-{size}-{key}.npy"


def cached_frames(
    store: Path,
    episode_folder: Path,
    view: CameraView,
    size: int,
    on_build: Callable[[Path], None] | None = None,
) -> np.ndarray:
    """(frames, size, size, 3) uint8, memory-mapped read-only; built (and `on_build` called) when
    missing or older than the episode's video."""
    video = episode_folder / f"{view.camera}.mp4"
    path = cache_path(store, episode_folder, view, size)
    stamp = path.with_suffix(".json")
    fingerprint = _fingerprint(video)
    try:
        fresh = json.loads(stamp.read_text()) == fingerprint
    except (OSError, ValueError):
        fresh = False
    if not fresh or not path.exists():
        if on_build is not None:
            on_build(video)
        _build(video, path, view, size)
        stamp.write_text(json.dumps(fingerprint))
    frames = np.load(path, mmap_mode="r")
    assert isinstance(frames, np.ndarray)
    return frames


def _build(video: Path, path: Path, view: CameraView, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # builders side by side do not collide
    with VideoReader(video) as reader:
        out = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.uint8, shape=(len(reader), size, size, 3)
        )
        count = 0
        for index, frame in enumerate(reader):
            if index >= len(out):
                break
            out[index] = view_frame(frame, view, size)
            count = index + 1
        if count < len(out):  # a video cut short: keep what decoded, repeat the last frame
            out[count:] = out[count - 1] if count else 0
        out.flush()
        del out
    os.replace(partial, path)
