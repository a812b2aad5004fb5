"""Export a store's episodes to a LeRobot dataset (format v3.0), and import one into a store.

A v3.0 dataset keeps all episodes in a few large files instead of files per episode:

```
meta/info.json                               format version, fps, robot type, features, path templates
meta/stats.json                              per feature: min, max, mean, std, count, q01..q99
meta/tasks.parquet                           the task texts (the index) and their task_index
meta/episodes/chunk-000/file-000.parquet     a row per episode: length, tasks, where its rows and
                                             video spans are, and its own stats (stats/<feature>/<stat>)
data/chunk-000/file-000.parquet              a row per frame, episodes back to back
videos/<camera feature>/chunk-000/file-000.mp4   per camera, episodes back to back
```

LeRobot finds episode e's frame k in a camera's file by time, at `from_timestamp[e] + timestamp[k]`,
and accepts the nearest frame only within 1e-4 s. The export therefore gives every frame exactly that
presentation time (a 1/90000 s time base, H.264 without B-frames, so decode order is presentation
order). `timestamp` is the recorded step time since the episode's first step, or frame_index / fps
on request (`ExportSettings.timestamps`): readers that look frames up by index need the latter.

The joint vectors use ALOHA's names and features: `observation.state` (follower positions),
`action`, `observation.velocity`, `observation.effort`, and `observation.images.<camera>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.catalogue import CameraStream, CameraStreamRecord, EpisodeRecord
from recorder.steps import RECORDS, UNKNOWN_MODE, StepWriter, read_steps, step_dtype
from recorder.store import Store
from recorder.video import VideoReader, VideoSettings, VideoWriter
from rig.step import SIDES, STATE_DIM

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk folder, as LeRobot writes
IMAGES = "observation.images."
TIME_BASE = Fraction(1, 90000)  # the export's video clock: 11 µs ticks, a whole number per frame at 50 Hz
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
JOINT_NAMES = tuple(f"{side}_{joint}" for side in SIDES for joint in ARM_JOINTS)
VECTORS = {  # dataset feature -> step field
    "observation.state": "qpos",
    "action": "action",
    "observation.velocity": "qvel",
    "observation.effort": "effort",
}
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
CONVERTER = "lerobot.datasets.v30.convert_dataset_v21_to_v30"


class LeRobotFormatError(ValueError):
    """A folder this module cannot read as a LeRobot v3.0 dataset; the message says what to do."""


@dataclass(frozen=True)
class ExportSettings:
    """How the export times, encodes and splits its files (LeRobot's own size limits by default).

    `timestamps`: "recorded" writes each step's time since the episode's first step; "grid" writes
    frame_index / fps, as LeRobot's own recorder does. Both place every video frame exactly at its
    row's time. They differ for readers that find frames by index rather than by time: LeRobot's
    torchcodec backend asks for frame round(t * fps) and then checks its time against t within
    1e-4 s, so a recorded time that runs early of the grid (real hardware, not the lock-step twin)
    fails there; "grid" is what such readers need.
    """

    timestamps: str = "recorded"
    crf: int = 23
    gop: int = 10  # frames per keyframe: LeRobot decodes from the keyframe before a wanted frame
    preset: str = "veryfast"
    data_file_mb: float = 100.0
    video_file_mb: float = 200.0
    image_stats_frames: int = 100  # frames sampled per episode and camera for the image stats

    def __post_init__(self) -> None:
        if self.timestamps not in ("recorded", "grid"):
            raise ValueError(f"timestamps {self.timestamps!r}: expected 'recorded' or 'grid'")


@dataclass(frozen=True)
class ExportSummary:
    out_dir: Path
    repo_id: str
    fps: int
    episodes: Mapping[int, int]  # store episode id -> dataset episode_index
    frames: int
    tasks: tuple[str, ...]
    cameras: tuple[str, ...]
    skipped: tuple[int, ...] = ()  # store episodes with no steps
    frames_filled: Mapping[str, int] = field(default_factory=dict)  # steps whose frame was missing
    max_jitter_s: float = 0.0  # the largest |timestamp - frame_index / fps| written
    # What the store had lost before the export (a step file shorter than the catalogue says, steps
    # whose frames never reached the video), one sentence per episode and camera: data that is not
    # in the dataset although the catalogue says it was recorded.
    losses: tuple[str, ...] = ()

    def describe(self) -> str:
        filled = sum(self.frames_filled.values())
        parts = [
            f"exported {len(self.episodes)} episodes ({self.frames} frames at {self.fps} fps,"
            f" cameras {', '.join(self.cameras) or 'none'}) to {self.out_dir}",
            f"tasks: {'; '.join(self.tasks)}",
        ]
        if self.skipped:
            parts.append(f"skipped episodes without steps: {', '.join(map(str, self.skipped))}")
        if filled:
            parts.append(f"{filled} missing frames shown as the previous one {dict(self.frames_filled)}")
        parts += [f"warning: {loss}" for loss in self.losses]
        if self.max_jitter_s > 1e-4:
            parts.append(
                f"timestamps stray up to {self.max_jitter_s * 1000:.1f} ms from frame_index / fps: readers"
                " that find frames by index (LeRobot's torchcodec backend) will miss frames; export with"
                " ExportSettings(timestamps='grid') for them"
            )
        return "\n".join(parts)


@dataclass(frozen=True)
class ImportSummary:
    dataset_dir: Path
    fps: int
    episodes: Mapping[int, int]  # dataset episode_index -> new store episode id
    frames: int
    tasks: tuple[str, ...]
    cameras: tuple[str, ...]
    zero_filled: tuple[str, ...] = ()  # features the dataset lacks, written as zeros

    def describe(self) -> str:
        ids = list(self.episodes.values())
        span = f"{ids[0]}..{ids[-1]}" if ids else "none"
        text = (
            f"imported {len(ids)} episodes ({self.frames} frames at {self.fps} fps, cameras"
            f" {', '.join(self.cameras) or 'none'}) from {self.dataset_dir} as episodes {span}"
        )
        if self.zero_filled:
            text += f"; the dataset has no {', '.join(self.zero_filled)}: stored as zeros"
        return text


# ==== export =======================================================================================


def export_lerobot(
    store: Store,
    out_dir: Path | str,
    episodes: Sequence[int] | None = None,
    repo_id: str = "local/rig",
    robot_type: str = "aloha",
    *,
    include_interrupted: bool = False,
    settings: ExportSettings | None = None,
) -> ExportSummary:
    """Write the store's episodes (all complete ones, or `episodes` by id) as a new LeRobot v3.0
    dataset in `out_dir`, which must be absent or empty. The dataset is written beside it and moved
    into place at the end, so a failed export leaves nothing half-written."""
    out = Path(out_dir)
    _check_empty(out)
    records = _select(store, episodes, include_interrupted)
    fps, cameras = _layout(store, records)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary = _write_dataset(
            staging, store, records, fps, cameras, repo_id, robot_type, settings or ExportSettings()
        )
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dataclasses.replace(summary, out_dir=out)


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} is not empty: an export writes a new dataset into an absent or empty folder."
            " Choose another folder, or remove this one if it is an old export you no longer need."
        )


def _select(store: Store, episodes: Sequence[int] | None, include_interrupted: bool) -> list[EpisodeRecord]:
    """The episodes to export, in the order given (or recorded)."""
    allowed = ("complete", "interrupted") if include_interrupted else ("complete",)
    if episodes is None:
        records = [record for record in store.catalogue.episodes() if record.status in allowed]
    else:
        records = [store.catalogue.episode(episode_id) for episode_id in episodes]
        for record in records:
            if record.status not in allowed:
                hint = (
                    " (pass include_interrupted=True to export it)" if record.status == "interrupted" else ""
                )
                raise ValueError(f"episode {record.id} is {record.status}; not exported{hint}")
    if not records:
        raise ValueError(f"{store.root}: no {' or '.join(allowed)} episodes to export")
    return records


def _layout(store: Store, records: Sequence[EpisodeRecord]) -> tuple[int, dict[str, CameraStreamRecord]]:
    """The one frame rate and camera set the episodes share: a dataset has a single fps and one
    video feature per camera, each of one size."""
    first = records[0]
    fps = round(first.rate_hz)
    if abs(first.rate_hz - fps) > 1e-6:
        raise ValueError(f"episode {first.id} was recorded at {first.rate_hz} Hz; LeRobot needs a whole fps")
    cameras = {stream.camera: stream for stream in store.catalogue.streams(first.id)}
    sizes = {name: (s.width, s.height) for name, s in cameras.items()}
    for record in records[1:]:
        theirs = {s.camera: (s.width, s.height) for s in store.catalogue.streams(record.id)}
        if abs(record.rate_hz - first.rate_hz) > 1e-6 or theirs != sizes:
            raise ValueError(
                f"episode {record.id} ({record.rate_hz} Hz, cameras {theirs}) differs from episode"
                f" {first.id} ({first.rate_hz} Hz, cameras {sizes}); export them to separate datasets"
            )
    return fps, cameras


def _write_dataset(
    root: Path,
    store: Store,
    records: Sequence[EpisodeRecord],
    fps: int,
    cameras: Mapping[str, CameraStreamRecord],
    repo_id: str,
    robot_type: str,
    settings: ExportSettings,
) -> ExportSummary:
    tasks = list(dict.fromkeys(record.task for record in records))
    rows: list[dict[str, Any]] = []
    mapping: dict[int, int] = {}
    skipped: list[int] = []
    losses: list[str] = []
    filled = dict.fromkeys(cameras, 0)
    frames, jitter = 0, 0.0
    with _Files(root, fps, cameras, settings) as files:
        for record in records:
            folder = store.episode_dir(record.id)
            steps = read_steps(folder)
            if len(steps) != record.steps:
                losses.append(
                    f"episode {record.id}: {folder / RECORDS} holds {len(steps)} whole steps, the catalogue "
                    f"says {record.steps} were recorded (the file was damaged after recording); "
                    f"exported {len(steps)}"
                )
            if len(steps) == 0:
                skipped.append(record.id)
                continue
            ticks = _ticks(steps["t"], fps, settings.timestamps)
            jitter = max(
                jitter, float(np.max(np.abs(ticks * float(TIME_BASE) - np.arange(len(ticks)) / fps)))
            )
            streams = {stream.camera: stream for stream in store.catalogue.streams(record.id)}
            row, missing = files.add_episode(
                folder, streams, steps, ticks, len(rows), frames, tasks.index(record.task), losses
            )
            rows.append({"episode_index": row["episode_index"], "tasks": [record.task], **row})
            mapping[record.id] = row["episode_index"]
            frames += len(steps)
            filled = {name: filled[name] + missing[name] for name in cameras}
    if not rows:
        raise ValueError(f"none of episodes {[r.id for r in records]} has any steps; nothing to export")
    _write_meta(root, rows, tasks, fps, cameras, robot_type, frames, settings)
    _write_card(root, repo_id, robot_type)
    return ExportSummary(
        root,
        repo_id,
        fps,
        mapping,
        frames,
        tuple(tasks),
        tuple(cameras),
        tuple(skipped),
        filled,
        jitter,
        tuple(losses),
    )


class _Files:
    """The data and video files being written, and what each episode adds to them."""

    def __init__(
        self, root: Path, fps: int, cameras: Mapping[str, CameraStreamRecord], settings: ExportSettings
    ) -> None:
        self.cameras, self.settings = cameras, settings
        self.period = round(1 / (fps * TIME_BASE))
        self.data = _DataFiles(root, settings.data_file_mb)
        self.videos = {
            name: _CameraFile(root, IMAGES + name, s.width, s.height, fps, settings)
            for name, s in cameras.items()
        }

    def add_episode(
        self,
        folder: Path,
        streams: Mapping[str, CameraStreamRecord],
        steps: np.ndarray,
        ticks: np.ndarray,
        episode_index: int,
        first: int,
        task_index: int,
        losses: list[str],
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """The episode's rows and frames appended (its own `streams`: the files in `folder`); its row
        of meta/episodes (less `tasks`), and how many steps per camera had no frame of their own.
        Frames the store lost are told in `losses`."""
        table = _data_table(steps, ticks, episode_index, first, task_index)
        chunk, file = self.data.add(table)
        row: dict[str, Any] = {
            "episode_index": episode_index,
            "length": len(steps),
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": first,
            "dataset_to_index": first + len(steps),
        }
        stats = {name: _stats(_column_values(table, name)) for name in table.column_names}
        missing = {}
        for name in self.cameras:
            images, missing[name] = _step_frames(folder, streams[name], steps, losses)
            sampler = _Sampler(len(steps), self.settings.image_stats_frames)
            span = self.videos[name].add_episode(ticks, int(ticks[-1]) + self.period, sampler.watch(images))
            row.update({f"videos/{IMAGES}{name}/{key}": value for key, value in span.items()})
            stats[IMAGES + name] = _image_stats(sampler.images)
        row.update({f"stats/{name}/{key}": v.tolist() for name, s in stats.items() for key, v in s.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        return row, missing

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self.data.close()
        for video in self.videos.values():
            video.close()


def _ticks(t: np.ndarray, fps: int, timestamps: str) -> np.ndarray:
    """Each row's time since the episode's start in TIME_BASE ticks: the recorded step times, or
    frame_index / fps; strictly increasing either way (video frames need distinct times)."""
    seconds = t - t[0] if timestamps == "recorded" else np.arange(len(t)) / fps
    ticks = np.round(seconds / float(TIME_BASE)).astype(np.int64)
    steps = np.arange(len(ticks))
    return np.maximum.accumulate(ticks - steps) + steps


def _data_table(
    steps: np.ndarray, ticks: np.ndarray, episode_index: int, first_index: int, task_index: int
) -> pa.Table:
    """The episode's rows of the data file."""
    count = len(steps)
    columns: dict[str, pa.Array] = {
        feature: pa.FixedSizeListArray.from_arrays(
            pa.array(steps[name].astype(np.float32).ravel(), pa.float32()), STATE_DIM
        )
        for feature, name in VECTORS.items()
    }
    columns["timestamp"] = pa.array((ticks * float(TIME_BASE)).astype(np.float32), pa.float32())
    columns["frame_index"] = pa.array(np.arange(count), pa.int64())
    columns["episode_index"] = pa.array(np.full(count, episode_index), pa.int64())
    columns["index"] = pa.array(np.arange(first_index, first_index + count), pa.int64())
    columns["task_index"] = pa.array(np.full(count, task_index), pa.int64())
    return pa.table(columns)


def _column_values(table: pa.Table, name: str) -> np.ndarray:
    """A data column as (rows, width) numbers."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), -1)
    return np.asarray(column.to_numpy(zero_copy_only=False)).reshape(len(column), 1)


def _stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats of (n, d) values, with the keys LeRobot's stats have."""
    data = values.astype(np.float64)
    stats = {
        "min": data.min(axis=0),
        "max": data.max(axis=0),
        "mean": data.mean(axis=0),
        "std": data.std(axis=0),
        "count": np.array([len(data)]),
    }
    quantiles = np.quantile(data, list(QUANTILES.values()), axis=0)
    return {**stats, **dict(zip(QUANTILES, quantiles, strict=True))}


def _image_stats(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel stats of the sampled (downsampled) frames in 0..1, shaped (3, 1, 1) like
    LeRobot's; `count` is the number of frames sampled."""
    pixels = np.concatenate([image.reshape(-1, 3) for image in images]) / 255.0
    stats = _stats(pixels)
    shaped = {key: value.reshape(3, 1, 1) for key, value in stats.items() if key != "count"}
    return {**shaped, "count": np.array([len(images)])}


def _downsampled(image: np.ndarray) -> np.ndarray:
    """About 150 pixels across, as LeRobot samples large frames for stats."""
    longest = max(image.shape[:2])
    step = 1 if longest < 300 else longest // 150
    return image[::step, ::step]


class _Sampler:
    """Keeps evenly spaced frames of an episode for its image stats, while they stream past."""

    def __init__(self, count: int, wanted: int) -> None:
        self._keep = set(np.round(np.linspace(0, count - 1, min(count, max(wanted, 1)))).astype(int).tolist())
        self.images: list[np.ndarray] = []

    def watch(self, images: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for index, image in enumerate(images):
            if index in self._keep:
                self.images.append(_downsampled(image).copy())
            yield image


def _step_frames(
    folder: Path, stream: CameraStreamRecord, steps: np.ndarray, losses: list[str]
) -> tuple[Iterator[np.ndarray], int]:
    """One image per step (the frame the step saw; the latest earlier one where the step has none),
    and how many steps had none. Steps whose frame never reached the video are told in `losses`."""
    path = folder / stream.file
    where = f"episode {stream.episode_id}: camera {stream.camera}'s video {path}"
    if not path.exists():
        raise FileNotFoundError(f"{where} is missing")
    reader = VideoReader(path)
    try:
        if len(reader) == 0:
            raise ValueError(f"{where} holds no frames")
        beyond = int(np.count_nonzero(_recorded_indices(steps, stream.camera) >= len(reader)))
        if beyond:
            losses.append(
                f"{where} holds {len(reader)} frames; {beyond} later steps point past its end (the recording "
                "was cut short before they were written) and show the last frame it has"
            )
        indices, missing = _video_indices(steps, stream.camera, len(reader))
    except BaseException:
        reader.close()
        raise
    return _read_frames(reader, indices), missing


def _recorded_indices(steps: np.ndarray, camera: str) -> np.ndarray:
    """Where each step's frame went in the video, as recorded (-1: none, or dropped by the encoder).
    A layout without `<camera>/video_index` is read as the recorder writes: the k-th step that saw a
    frame (`frame_number` >= 0) has the k-th video frame."""
    if f"{camera}/video_index" in (steps.dtype.names or ()):
        return steps[f"{camera}/video_index"].astype(np.int64)
    seen = steps[f"{camera}/frame_number"] >= 0
    return np.where(seen, np.cumsum(seen) - 1, -1)


def _video_indices(steps: np.ndarray, camera: str, frames: int) -> tuple[np.ndarray, int]:
    """The video frame of each step, and how many steps had to borrow a neighbour's: a step without a
    frame of its own (or whose frame is not in the video) shows the latest one before it (the first,
    at the start)."""
    if frames == 0:
        raise ValueError(f"camera {camera} has no video frames")
    index = _recorded_indices(steps, camera)
    valid = (index >= 0) & (index < frames)
    latest = np.maximum.accumulate(np.where(valid, index, -1))
    return np.clip(latest, 0, frames - 1), int(np.count_nonzero(~valid))


def _read_frames(reader: VideoReader, indices: np.ndarray) -> Iterator[np.ndarray]:
    """Frames by index (non-decreasing), each decoded once."""
    try:
        last, image = -1, None
        for index in indices.tolist():
            if index != last:
                image, last = reader.frame(index), index
            assert image is not None
            yield image
    finally:
        reader.close()


class _CameraFile:
    """One camera's video: episodes encoded back to back, a new file once one passes the size limit."""

    def __init__(
        self, root: Path, key: str, width: int, height: int, fps: int, settings: ExportSettings
    ) -> None:
        self.root, self.key, self.width, self.height, self.fps = root, key, width, height, fps
        self.settings = settings
        self.chunk, self.file = 0, -1
        self.offset = 0  # where the next episode starts in the current file, in ticks
        self._container: Any = None
        self._stream: Any = None
        self._path: Path | None = None

    def add_episode(self, ticks: np.ndarray, length: int, images: Iterable[np.ndarray]) -> dict[str, Any]:
        """Encode an episode's frames at `ticks` after its start; it lasts `length` ticks."""
        if self._container is None or self._full():
            self._open_next()
        start = self.offset
        count = 0
        for tick, image in zip(ticks.tolist(), images, strict=False):
            self._encode(_video_frame(image, self.width, self.height, start + tick))
            count += 1
        if count != len(ticks):
            raise ValueError(f"{self.key}: {count} frames for {len(ticks)} steps")
        self.offset = start + length
        return {
            "chunk_index": self.chunk,
            "file_index": self.file,
            "from_timestamp": float(start * TIME_BASE),
            "to_timestamp": float(self.offset * TIME_BASE),
        }

    def _full(self) -> bool:
        assert self._path is not None
        return self.offset > 0 and self._path.stat().st_size >= self.settings.video_file_mb * 1024**2

    def _open_next(self) -> None:
        self.close()
        self.chunk, self.file = _next_file(self.chunk, self.file)
        self._path = self.root / VIDEO_PATH.format(
            video_key=self.key, chunk_index=self.chunk, file_index=self.file
        )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        options = {"crf": str(self.settings.crf), "g": str(self.settings.gop), "bf": "0"}
        options["preset"] = self.settings.preset
        self._container = av.open(str(self._path), "w")
        stream = self._container.add_stream("libx264", rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        stream.time_base = TIME_BASE
        self._stream, self.offset = stream, 0

    def _encode(self, frame: av.VideoFrame | None) -> None:
        for packet in self._stream.encode(frame):
            packet.duration = round(1 / (self.fps * TIME_BASE))  # the last frame's too: the file's length
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            self._encode(None)
            self._container.close()
            self._container = None


def _video_frame(image: np.ndarray, width: int, height: int, pts: int) -> av.VideoFrame:
    if image.shape != (height, width, 3):
        raise ValueError(f"a frame of shape {image.shape}, the stream is {height}x{width} RGB")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts, frame.time_base = pts, TIME_BASE
    return frame


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    """The file after (chunk, file): CHUNKS_SIZE files to a chunk folder."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _DataFiles:
    """The data parquet files: episodes' rows appended, a new file once one passes the size limit."""

    def __init__(self, root: Path, limit_mb: float) -> None:
        self.root, self.limit = root, limit_mb * 1024**2
        self.chunk, self.file = 0, -1
        self._writer: pq.ParquetWriter | None = None
        self._bytes = 0

    def add(self, table: pa.Table) -> tuple[int, int]:
        if self._writer is None or self._bytes >= self.limit:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer, self._bytes = pq.ParquetWriter(path, table.schema, compression="snappy"), 0
        self._writer.write_table(table)
        self._bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _aggregate(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Whole-dataset stats from per-episode ones: exact min, max, mean and std; quantiles as the
    count-weighted mean of the episodes' (as LeRobot aggregates them)."""
    counts = np.array([part["count"][0] for part in parts], dtype=np.float64)
    shape = (-1,) + (1,) * np.asarray(parts[0]["mean"]).ndim
    weights = (counts / counts.sum()).reshape(shape)
    means = np.stack([part["mean"] for part in parts])
    mean = (weights * means).sum(axis=0)
    variance = (weights * (np.stack([part["std"] for part in parts]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    stats = {
        "min": np.min(np.stack([part["min"] for part in parts]), axis=0),
        "max": np.max(np.stack([part["max"] for part in parts]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())]),
    }
    for key in QUANTILES:
        stats[key] = (weights * np.stack([part[key] for part in parts])).sum(axis=0)
    return stats


def _write_meta(
    root: Path,
    rows: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    fps: int,
    cameras: Mapping[str, CameraStreamRecord],
    robot_type: str,
    frames: int,
    settings: ExportSettings,
) -> None:
    features = _features(cameras, fps)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(rows),
        "total_frames": frames,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": math.ceil(settings.data_file_mb),
        "video_files_size_in_mb": math.ceil(settings.video_file_mb),
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cameras else None,
        "features": features,
    }
    _write_json(root / INFO_PATH, info)
    stats = {name: _aggregate([_episode_stats(row, name) for row in rows]) for name in features}
    _write_json(root / STATS_PATH, {name: {k: v.tolist() for k, v in s.items()} for name, s in stats.items()})
    _write_tasks(root / TASKS_PATH, tasks)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)


def _episode_stats(row: Mapping[str, Any], name: str) -> dict[str, np.ndarray]:
    prefix = f"stats/{name}/"
    return {key[len(prefix) :]: np.asarray(value) for key, value in row.items() if key.startswith(prefix)}


def _features(cameras: Mapping[str, CameraStreamRecord], fps: int) -> dict[str, Any]:
    """info.json's features: the joint vectors, a video per camera, then LeRobot's index columns."""
    features: dict[str, Any] = {
        name: {"dtype": "float32", "shape": [STATE_DIM], "names": list(JOINT_NAMES)} for name in VECTORS
    }
    for name, stream in cameras.items():
        features[IMAGES + name] = {
            "dtype": "video",
            "shape": [stream.height, stream.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": stream.height,
                "video.width": stream.width,
                "video.codec": "h264",
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    for name, dtype in INDEX_FEATURES.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _write_tasks(path: Path, tasks: Sequence[str]) -> None:
    """tasks.parquet as pandas writes a frame indexed by task text, which is how LeRobot reads it
    (`pd.read_parquet`, then a row's `.name` is its task)."""
    table = pa.table(
        {
            "task_index": pa.array(range(len(tasks)), pa.int64()),
            "__index_level_0__": pa.array(list(tasks), pa.string()),
        }
    )
    index = {
        "name": None,
        "field_name": "__index_level_0__",
        "pandas_type": "unicode",
        "numpy_type": "object",
    }
    column = {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64"}
    pandas = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{**index, "field_name": None, "metadata": {"encoding": "UTF-8"}}],
        "columns": [{**column, "metadata": None}, {**index, "metadata": None}],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas)}), path)


def _write_card(root: Path, repo_id: str, robot_type: str) -> None:
    """A dataset card, so the folder can be uploaded to the Hub as it is."""
    text = (
        "---\nlicense: apache-2.0\ntask_categories:\n- robotics\ntags:\n- LeRobot\n- rig\n"
        "configs:\n- config_name: default\n  data_files: data/*/*.parquet\n---\n\n"
        f"# {repo_id}\n\nEpisodes recorded on a {robot_type} rig with `rig`, exported as a LeRobot"
        f" dataset ({CODEBASE_VERSION}). See `meta/info.json` for its features.\n"
    )
    (root / "README.md").write_text(text)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4, ensure_ascii=False) + "\n")


# ==== import =======================================================================================


@dataclass(frozen=True)
class _Dataset:
    """What a v3.0 folder says about itself, read once."""

    root: Path
    info: Mapping[str, Any]
    tasks: tuple[str, ...]  # by task_index
    episodes: tuple[Mapping[str, Any], ...]  # rows of meta/episodes, by episode_index

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    @property
    def video_keys(self) -> list[str]:
        return [key for key, feature in self.info["features"].items() if feature["dtype"] == "video"]

    def path(self, template_key: str, **fields: Any) -> Path:
        return self.root / str(self.info[template_key]).format(**fields)


def import_lerobot(
    store: Store,
    dataset_dir: Path | str,
    task: str | None = None,
    *,
    episodes: Sequence[int] | None = None,
    settings: VideoSettings | None = None,
) -> ImportSummary:
    """Add a LeRobot v3.0 dataset's episodes (all, or `episodes` by episode_index) to the store as
    new complete episodes: steps from its rows, a video per camera from its span of the camera's
    file, and the dataset's task text (or `task` for all). An episode that fails to import is
    removed again, so the store never holds half an episode."""
    dataset = _read_dataset(Path(dataset_dir))
    features = dataset.info["features"]
    _check_features(dataset)
    cameras = {key: _camera_name(key) for key in dataset.video_keys}
    absent = tuple(name for name in ("observation.velocity", "observation.effort") if name not in features)
    chosen = _choose(dataset, episodes)
    for row in chosen:
        _check_files(dataset, row, cameras)
    session_id = store.catalogue.start_session(
        profile=f"lerobot:{dataset.root.name}",
        profile_snapshot=json.dumps(dataset.info, indent=1),
        calibration={},
        rig_version=_rig_version(),
    )
    mapping: dict[int, int] = {}
    frames, texts = 0, []
    with _TableCache() as tables:
        for row in chosen:
            columns = _episode_columns(dataset, row, tables)
            text = task or _episode_task(dataset, row, columns)
            episode_id = _import_episode(store, session_id, dataset, row, columns, cameras, text, settings)
            mapping[int(row["episode_index"])] = episode_id
            frames += len(columns["timestamp"])
            texts.append(text)
    return ImportSummary(
        dataset.root,
        dataset.fps,
        mapping,
        frames,
        tuple(dict.fromkeys(texts)),
        tuple(cameras.values()),
        absent,
    )


def _read_dataset(root: Path) -> _Dataset:
    info_path = root / INFO_PATH
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    if not info_path.exists():
        raise FileNotFoundError(
            f"{info_path}: missing, so {root} is not a LeRobot dataset (or is incomplete)"
        )
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", "unknown"))
    if not version.startswith("v3."):
        raise LeRobotFormatError(_version_message(root, version))
    for path in (root / TASKS_PATH, root / "meta" / "episodes"):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; the dataset at {root} is incomplete")
    return _Dataset(root, info, _read_tasks(root / TASKS_PATH), _read_episodes(root))


def _version_message(root: Path, version: str) -> str:
    if version.startswith(("v1.", "v2.")):
        return (
            f"{root} is a LeRobot {version} dataset; this rig reads v3.0. Convert it with LeRobot's"
            f" converter (`pip install lerobot`), which rewrites it in place and keeps the original as"
            f" <name>_old: `python -m {CONVERTER} --repo-id=<owner>/{root.name} --root=<the folder holding"
            f" <owner>/{root.name}> --push-to-hub=false` (a v2.0 dataset needs LeRobot's v2.0 -> v2.1"
            " converter first)."
        )
    return f"{root}: codebase_version {version!r}; this rig reads LeRobot datasets of version v3.0"


def _read_tasks(path: Path) -> tuple[str, ...]:
    """Task texts by task_index. LeRobot writes them as a pandas index; a plain `task` column is
    read too."""
    table = pq.read_table(path)
    pandas = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    names = [name for name in pandas.get("index_columns", []) if isinstance(name, str)]
    column = next((n for n in [*names, "task", "__index_level_0__"] if n in table.column_names), None)
    if column is None or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{path}: no task texts (columns {table.column_names})")
    by_index = dict(
        zip(table.column("task_index").to_pylist(), table.column(column).to_pylist(), strict=True)
    )
    return tuple(str(by_index[i]) for i in range(len(by_index)))


def _read_episodes(root: Path) -> tuple[Mapping[str, Any], ...]:
    paths = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not paths:
        raise FileNotFoundError(f"{root / 'meta' / 'episodes'}: no episode files; the dataset is incomplete")
    rows = [row for path in paths for row in _without_stats(pq.read_table(path)).to_pylist()]
    return tuple(sorted(rows, key=lambda row: int(row["episode_index"])))


def _without_stats(table: pa.Table) -> pa.Table:
    """An episodes table without its per-episode stats, which an import does not need."""
    return table.select([name for name in table.column_names if not name.startswith("stats/")])


def _check_features(dataset: _Dataset) -> None:
    features = dataset.info["features"]
    for name in ("observation.state", "action"):
        if name not in features:
            raise LeRobotFormatError(f"{dataset.root}: the dataset has no {name!r} feature")
    for name in VECTORS:
        if name in features and tuple(features[name]["shape"]) != (STATE_DIM,):
            raise LeRobotFormatError(
                f"{dataset.root}: {name} has shape {tuple(features[name]['shape'])}; the store holds"
                f" bimanual ALOHA vectors of {STATE_DIM}"
            )
    images = [key for key, feature in features.items() if feature["dtype"] == "image"]
    if images:
        raise LeRobotFormatError(
            f"{dataset.root}: cameras {images} are stored as images in the data files; this rig imports"
            " cameras stored as videos"
        )


def _camera_name(key: str) -> str:
    return key.removeprefix(IMAGES) if key.startswith(IMAGES) else key.replace(".", "_")


def _choose(dataset: _Dataset, episodes: Sequence[int] | None) -> list[Mapping[str, Any]]:
    if episodes is None:
        return list(dataset.episodes)
    by_index = {int(row["episode_index"]): row for row in dataset.episodes}
    unknown = [index for index in episodes if index not in by_index]
    if unknown:
        raise KeyError(f"{dataset.root}: no episodes {unknown} (it has 0..{len(by_index) - 1})")
    return [by_index[index] for index in episodes]


def _check_files(dataset: _Dataset, row: Mapping[str, Any], cameras: Mapping[str, str]) -> None:
    """Every file an episode needs, before the store is touched."""
    index = row["episode_index"]
    paths = [
        dataset.path("data_path", chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    ]
    for key in cameras:
        paths.append(_video_path(dataset, row, key))
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (needed by episode {index}); the dataset is incomplete")


def _video_path(dataset: _Dataset, row: Mapping[str, Any], key: str) -> Path:
    return dataset.path(
        "video_path",
        video_key=key,
        chunk_index=row[f"videos/{key}/chunk_index"],
        file_index=row[f"videos/{key}/file_index"],
    )


class _TableCache:
    """The data file read last: consecutive episodes usually share one."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._table: pa.Table | None = None

    def read(self, path: Path) -> pa.Table:
        if path != self._path:
            self._path, self._table = path, pq.read_table(path)
        assert self._table is not None
        return self._table

    def __enter__(self) -> _TableCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self._path = self._table = None


def _episode_columns(dataset: _Dataset, row: Mapping[str, Any], tables: _TableCache) -> dict[str, np.ndarray]:
    """The episode's rows, in frame order, as arrays by feature."""
    path = dataset.path("data_path", chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    table = tables.read(path)
    rows = table.filter(pc.equal(table.column("episode_index"), int(row["episode_index"])))
    if rows.num_rows == 0:
        raise LeRobotFormatError(f"{path}: no rows of episode {row['episode_index']}")
    lacking = [name for name in ("observation.state", "action", "timestamp") if name not in rows.column_names]
    if lacking:
        raise LeRobotFormatError(f"{path}: no column {', '.join(lacking)}")
    if "frame_index" in rows.column_names:
        rows = rows.sort_by("frame_index")
    wanted = [*VECTORS, "timestamp", "task_index"]
    return {name: _column_values(rows, name) for name in wanted if name in rows.column_names}


def _episode_task(dataset: _Dataset, row: Mapping[str, Any], columns: Mapping[str, np.ndarray]) -> str:
    if "task_index" in columns:
        return dataset.tasks[int(columns["task_index"][0, 0])]
    tasks = row.get("tasks") or []
    if not tasks:
        raise LeRobotFormatError(f"{dataset.root}: episode {row['episode_index']} has no task; pass task=")
    return str(tasks[0])


def _import_episode(
    store: Store,
    session_id: int,
    dataset: _Dataset,
    row: Mapping[str, Any],
    columns: Mapping[str, np.ndarray],
    cameras: Mapping[str, str],
    task: str,
    settings: VideoSettings | None,
) -> int:
    """One dataset episode as a new complete store episode; removed again if anything fails."""
    settings = settings or VideoSettings()
    t = columns["timestamp"][:, 0].astype(np.float64)
    shapes = {key: dataset.info["features"][key]["shape"] for key in cameras}
    streams = [
        CameraStream(
            name, int(shapes[key][1]), int(shapes[key][0]), dataset.fps, settings.codec, f"{name}.mp4"
        )
        for key, name in cameras.items()
    ]
    episode_id = store.catalogue.start_episode(session_id, task, float(dataset.fps), streams)
    try:
        folder = store.new_episode_dir(episode_id)
        records = _records(columns, list(cameras.values()))
        with StepWriter(folder, list(cameras.values())) as writer:
            writer.append(records)
        for key, stream in zip(cameras, streams, strict=True):
            start = float(row[f"videos/{key}/from_timestamp"])
            images = _frames_at(_video_path(dataset, row, key), start + t, dataset.fps, key)
            written = _write_video(folder / stream.file, stream, images, settings)
            store.catalogue.update_stream(episode_id, stream.camera, written, 0)
        store.catalogue.finish_episode(
            episode_id,
            steps=len(t),
            duration_s=float(t[-1] - t[0]) + 1.0 / dataset.fps,
            status="complete",
            frames_dropped={stream.camera: 0 for stream in streams},
        )
    except BaseException:
        with contextlib.suppress(Exception):
            store.delete_episode(episode_id)
        raise
    return episode_id


def _records(columns: Mapping[str, np.ndarray], cameras: Sequence[str]) -> np.ndarray:
    """Step records of the dataset rows: vectors it lacks are zeros, the leader, the mode and the
    policy's proposal are unknown (NaN, -1, NaN), and each camera's frame k is step k's."""
    t = columns["timestamp"][:, 0].astype(np.float64)
    count = len(t)
    records = np.zeros(count, step_dtype(cameras))
    records["index"] = np.arange(count)
    records["t"] = t
    for feature, name in VECTORS.items():
        if feature in columns:
            records[name] = columns[feature]
    records["leader"] = np.nan
    records["mode"] = UNKNOWN_MODE
    records["policy_action"] = np.nan
    for camera in cameras:
        records[f"{camera}/timestamp_ms"] = t * 1000.0
        records[f"{camera}/frame_number"] = np.arange(count)
        records[f"{camera}/age_s"] = 0.0
        if f"{camera}/video_index" in (records.dtype.names or ()):
            records[f"{camera}/video_index"] = np.arange(count)
    return records


def _frames_at(path: Path, times: np.ndarray, fps: int, key: str) -> Iterator[np.ndarray]:
    """The frame shown at each of `times` (seconds into the file, increasing): the nearest one,
    decoding forward from the keyframe before the first."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.time_base is None:
            raise LeRobotFormatError(f"{path}: the video stream has no time base")
        container.seek(max(0, int(times[0] / stream.time_base)), stream=stream, backward=True)
        decoded = ((frame.time, frame) for frame in container.decode(stream) if frame.time is not None)
        previous, upcoming = next(decoded, None), next(decoded, None)
        for target in times.tolist():
            while upcoming is not None and upcoming[0] <= target:
                previous, upcoming = upcoming, next(decoded, None)
            if previous is None:
                raise LeRobotFormatError(f"{path}: no frames to decode")
            best = previous
            if upcoming is not None and abs(upcoming[0] - target) < abs(target - previous[0]):
                best = upcoming
            if abs(best[0] - target) > 1.0 / fps:
                raise LeRobotFormatError(
                    f"{path}: no frame of {key} near {target:.4f} s (nearest at {best[0]:.4f} s);"
                    " the video and the episode's timestamps disagree"
                )
            yield best[1].to_ndarray(format="rgb24")


def _write_video(
    path: Path, stream: CameraStream, images: Iterable[np.ndarray], settings: VideoSettings
) -> int:
    writer = VideoWriter(path, stream.width, stream.height, stream.fps, settings)
    count = 0
    try:
        for image in images:
            writer.write(image)
            count += 1
    finally:
        writer.close()
    return count


def _rig_version() -> str:
    try:
        return metadata.version("rig")
    except metadata.PackageNotFoundError:
        return "unknown"


__all__ = [
    "CODEBASE_VERSION",
    "ExportSettings",
    "ExportSummary",
    "ImportSummary",
    "LeRobotFormatError",
    "export_lerobot",
    "import_lerobot",
]
