"""Export a store's episodes as a new LeRobot v3.0 dataset (the layout: recorder/lerobot.py)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hardware.profile import RobotSpec
from recorder.catalogue import CameraStreamRecord, EpisodeRecord
from recorder.lerobot_facts import FACTS_COLUMN, EpisodeFacts
from recorder.lerobot_files import CameraFile, DataFiles
from recorder.lerobot_format import IMAGES, TIME_BASE, VECTORS, ExportSettings, column_values, joint_names
from recorder.lerobot_meta import write_card, write_meta
from recorder.lerobot_stats import FrameSampler, feature_stats, image_stats
from recorder.steps import RECORDS, read_steps
from recorder.store import Store
from recorder.video import VideoReader
from rig.step import STATE_DIM


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


def export_lerobot(
    store: Store,
    out_dir: Path | str,
    episodes: Sequence[int] | None = None,
    repo_id: str = "local/rig",
    robot_type: str = "aloha",
    *,
    robot: RobotSpec | None = None,
    include_interrupted: bool = False,
    settings: ExportSettings | None = None,
) -> ExportSummary:
    """Write the store's episodes (all complete ones, or `episodes` by id) as a new LeRobot v3.0
    dataset in `out_dir`, which must be absent or empty. The dataset is written beside it and moved
    into place at the end, so a failed export leaves nothing half-written. The joint vectors' values
    are named after `robot`'s joints (the profile's `[robot]`; ALOHA's by default)."""
    out = Path(out_dir)
    _check_empty(out)
    records = _select(store, episodes, include_interrupted)
    fps, cameras = _layout(store, records)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary = _write_dataset(
            staging,
            store,
            records,
            fps,
            cameras,
            repo_id,
            robot_type,
            joint_names(robot or RobotSpec()),
            settings or ExportSettings(),
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
    joints: Sequence[str],
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
            facts = EpisodeFacts.of(record, store.catalogue.segments(record.id)).to_json()
            rows.append(
                {"episode_index": row["episode_index"], "tasks": [record.task], **row, FACTS_COLUMN: facts}
            )
            mapping[record.id] = row["episode_index"]
            frames += len(steps)
            filled = {name: filled[name] + missing[name] for name in cameras}
    if not rows:
        raise ValueError(f"none of episodes {[r.id for r in records]} has any steps; nothing to export")
    write_meta(root, rows, tasks, fps, cameras, robot_type, joints, frames, settings)
    write_card(root, repo_id, robot_type)
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
        self.data = DataFiles(root, settings.data_file_mb)
        self.videos = {
            name: CameraFile(root, IMAGES + name, s.width, s.height, fps, settings)
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
        stats = {name: feature_stats(column_values(table, name)) for name in table.column_names}
        missing = {}
        for name in self.cameras:
            images, missing[name] = _step_frames(folder, streams[name], steps, losses)
            sampler = FrameSampler(len(steps), self.settings.image_stats_frames)
            span = self.videos[name].add_episode(ticks, int(ticks[-1]) + self.period, sampler.watch(images))
            row.update({f"videos/{IMAGES}{name}/{key}": value for key, value in span.items()})
            stats[IMAGES + name] = image_stats(sampler.images)
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
