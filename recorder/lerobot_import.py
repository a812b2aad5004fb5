"""Import a LeRobot v3.0 dataset's episodes into a store as new complete episodes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.catalogue import CameraStream
from recorder.lerobot_facts import EpisodeFacts
from recorder.lerobot_format import (
    CONVERTER,
    IMAGES,
    INFO_PATH,
    TASKS_PATH,
    VECTORS,
    LeRobotFormatError,
    column_values,
)
from recorder.steps import UNKNOWN_MODE, StepWriter, step_dtype
from recorder.store import Store
from recorder.video import VideoSettings, VideoWriter
from rig.step import STATE_DIM


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
    return {name: column_values(rows, name) for name in wanted if name in rows.column_names}


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
    facts = EpisodeFacts.from_row(row)  # what an export from a store kept beyond LeRobot's fields
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
            outcome=facts.outcome,
            twin_reward=facts.twin_reward,
            segments=facts.segments,
        )
        facts.restore_labels(store.catalogue, episode_id)
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
