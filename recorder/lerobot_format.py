"""The LeRobot v3.0 layout that export and import share: where each file goes, the features of a
row, the export's video clock, the joint names, and the settings and errors of both directions."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from hardware.profile import RobotSpec
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


def joint_names(robot: RobotSpec) -> tuple[str, ...]:
    """The names of a state vector's values as ALOHA's datasets give them (`left_waist` ..
    `right_gripper`), from the robot's joints so that another arm exports under its own names."""
    names = tuple(f"{side}_{joint}" for side in SIDES for joint in robot.joints)
    if len(names) != STATE_DIM:
        raise ValueError(f"{len(names)} joint names for state vectors of {STATE_DIM}")
    return names


JOINT_NAMES = joint_names(RobotSpec())  # the default robot's (ALOHA's)


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


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """A data column as (rows, width) numbers."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), -1)
    return np.asarray(column.to_numpy(zero_copy_only=False)).reshape(len(column), 1)
