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

The joint vectors use ALOHA's features, their values named after the robot's joints (the profile's
`[robot]`; ALOHA's by default): `observation.state` (follower positions), `action`,
`observation.velocity`, `observation.effort`, and `observation.images.<camera>`.

The work is split by job: `lerobot_format` (paths, features, joint names, settings),
`lerobot_export` (with `lerobot_files` writing the data and video files, `lerobot_meta` the metadata
and `lerobot_stats` the statistics), `lerobot_import`, and `lerobot_facts` (what the store knows that
LeRobot has no field for). This module is the public face.
"""

from __future__ import annotations

from recorder.lerobot_export import ExportSummary, export_lerobot
from recorder.lerobot_format import (
    CODEBASE_VERSION,
    JOINT_NAMES,
    ExportSettings,
    LeRobotFormatError,
    joint_names,
)
from recorder.lerobot_import import ImportSummary, import_lerobot

__all__ = [
    "CODEBASE_VERSION",
    "JOINT_NAMES",
    "ExportSettings",
    "ExportSummary",
    "ImportSummary",
    "LeRobotFormatError",
    "export_lerobot",
    "import_lerobot",
    "joint_names",
]
