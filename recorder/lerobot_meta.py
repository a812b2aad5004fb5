"""The export's metadata: meta/info.json (features, path templates), meta/stats.json,
meta/tasks.parquet, meta/episodes and the dataset card."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recorder.catalogue import CameraStreamRecord
from recorder.lerobot_format import (
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    EPISODES_PATH,
    IMAGES,
    INDEX_FEATURES,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
    VECTORS,
    VIDEO_PATH,
    ExportSettings,
)
from recorder.lerobot_stats import aggregate_stats, episode_stats
from rig.step import STATE_DIM


def write_meta(
    root: Path,
    rows: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    fps: int,
    cameras: Mapping[str, CameraStreamRecord],
    robot_type: str,
    joints: Sequence[str],
    frames: int,
    settings: ExportSettings,
) -> None:
    features = _features(cameras, fps, joints)
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
    stats = {name: aggregate_stats([episode_stats(row, name) for row in rows]) for name in features}
    _write_json(root / STATS_PATH, {name: {k: v.tolist() for k, v in s.items()} for name, s in stats.items()})
    _write_tasks(root / TASKS_PATH, tasks)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)


def _features(cameras: Mapping[str, CameraStreamRecord], fps: int, joints: Sequence[str]) -> dict[str, Any]:
    """info.json's features: the joint vectors (their values named `joints`), a video per camera, then
    LeRobot's index columns."""
    features: dict[str, Any] = {
        name: {"dtype": "float32", "shape": [STATE_DIM], "names": list(joints)} for name in VECTORS
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


def write_card(root: Path, repo_id: str, robot_type: str) -> None:
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
