"""Rebuilding a store's catalogue from its episode folders, after the catalogue was lost or damaged.

Each folder's `episode.json` (recorder/episode_file.py) holds the catalogue's rows about it, and they
go back as they were, under the same ids. A folder without one (recorded before the copies existed,
or with the copy damaged) gets what its files tell: the cameras from the step header and the videos,
the rate and length from the steps, the segments from their modes; its task is unknown and it is
marked `interrupted`, so training leaves it out until someone looks. The damaged catalogue is moved
aside, never deleted. Training runs live in the catalogue only (their checkpoints stay in their run
folders) and are not rebuilt.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from recorder.catalogue import Catalogue
from recorder.episode_file import read_episode_file
from recorder.steps import HEADER, duration_of, labeled_segments, read_header, read_steps
from recorder.store import CATALOGUE, EPISODES, Store, held_lock

UNKNOWN_TASK = "unknown task (rebuilt from the episode's files)"
DEFAULT_RATE_HZ = 50.0  # for an episode with fewer than two steps to measure it from


@dataclass(frozen=True)
class RebuildSummary:
    root: Path
    restored: tuple[int, ...]  # episodes put back from their episode.json
    from_files: tuple[int, ...]  # episodes rebuilt from their files alone
    kept_as: Path | None  # where the old catalogue went
    problems: tuple[str, ...] = ()  # why some folders had no usable episode.json

    def describe(self) -> str:
        lines = [
            f"rebuilt {self.root / CATALOGUE}: {len(self.restored)} episode(s) as the catalogue had them, "
            f"{len(self.from_files)} from their files alone (task unknown, marked interrupted)"
        ]
        if self.from_files:
            lines.append(f"  from files: {', '.join(map(str, self.from_files))}; `rig show` each to check it")
        lines += [f"  {problem}" for problem in self.problems]
        if self.kept_as is not None:
            lines.append(f"  the old catalogue is kept as {self.kept_as}; delete it once you are content")
        lines.append("  training runs are not rebuilt: their checkpoints are still in their run folders")
        return "\n".join(lines)


def rebuild_catalogue(root: Path) -> RebuildSummary:
    """A new catalogue for the store at `root`, from its episode folders (see the module)."""
    root = Path(root)
    folders = root / EPISODES
    if not folders.is_dir():
        raise FileNotFoundError(f"{root}: no {EPISODES} folder, so nothing to rebuild a catalogue from")
    restored: list[int] = []
    from_files: list[int] = []
    problems: list[str] = []
    with held_lock(root):
        kept_as = _move_aside(root / CATALOGUE)
        catalogue = Catalogue(root / CATALOGUE)
        try:
            session_id: int | None = None
            for folder in sorted(p for p in folders.iterdir() if p.is_dir() and p.name.isdigit()):
                episode_id = int(folder.name)
                try:
                    snapshot = read_episode_file(folder)
                    if snapshot is not None:
                        catalogue.restore(snapshot)
                        restored.append(episode_id)
                        continue
                except (ValueError, KeyError, TypeError) as error:
                    problems.append(f"episode {episode_id}: {error}; rebuilt from its files")
                session_id = session_id or _rebuild_session(catalogue)
                catalogue.restore(_snapshot_from_files(folder, episode_id, catalogue.session_row(session_id)))
                from_files.append(episode_id)
        finally:
            catalogue.close()
    with Store(root) as store:  # recovers what was `recording`, judges what was never judged
        for episode_id in from_files:
            store.keep_episode_file(episode_id)
    return RebuildSummary(root, tuple(restored), tuple(from_files), kept_as, tuple(problems))


def _move_aside(path: Path) -> Path | None:
    """Rename the old catalogue (and SQLite's files beside it) out of the way; where it went."""
    if not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(kept.with_name(kept.name + suffix))
    path.rename(kept)
    return kept


def _rebuild_session(catalogue: Catalogue) -> int:
    return catalogue.start_session(
        profile="unknown (rebuilt)",
        profile_snapshot="",
        calibration={},
        rig_version="unknown",
        host=socket.gethostname(),
    )


def _snapshot_from_files(folder: Path, episode_id: int, session: Mapping[str, Any]) -> dict[str, Any]:
    """What the catalogue would have said about the episode, as far as its files tell."""
    try:
        cameras = read_header(folder).cameras
        records = read_steps(folder)
    except (OSError, ValueError):  # no header (died at once) or a damaged one: no steps to read
        cameras, records = tuple(p.stem for p in sorted(folder.glob("*.mp4"))), np.empty(0)
    rate = _rate_of(records)
    started = _file_time(folder / HEADER) or _file_time(folder) or session["started_at"]
    episode = {
        "id": episode_id,
        "session_id": session["id"],
        "task": UNKNOWN_TASK,
        "started_at": started,
        "ended_at": started,
        "steps": len(records),
        "duration_s": duration_of(records, rate) if len(records) else 0.0,
        "rate_hz": rate,
        "status": "interrupted",
        "outcome": None,
        "notes": "rebuilt from its files after the catalogue was lost: task, outcome and tags unknown",
        "twin_reward": None,
        "frames_dropped": "{}",
        "tags": "",
        "flags": None,
    }
    segments = labeled_segments(records) if len(records) else []
    return {
        "episode": episode,
        "session": dict(session),
        "streams": [_stream_from_video(folder, camera, rate) for camera in cameras],
        "segments": [
            {"label": s.label, "start_step": s.start_step, "end_step": s.end_step} for s in segments
        ],
    }


def _rate_of(records: np.ndarray) -> float:
    if len(records) < 2:
        return DEFAULT_RATE_HZ
    period = float(np.median(np.diff(records["t"])))
    return round(1.0 / period, 3) if period > 0 else DEFAULT_RATE_HZ


def _stream_from_video(folder: Path, camera: str, rate: float) -> dict[str, Any]:
    import av  # needed only here

    from recorder.video import VideoReader

    file = f"{camera}.mp4"
    width = height = frames = 0
    try:
        with VideoReader(folder / file) as video:
            width, height, frames = video.width, video.height, len(video)
    except (OSError, ValueError, av.error.FFmpegError):
        pass  # no video (or not even its header): a stream of no frames
    return {
        "camera": camera,
        "width": width,
        "height": height,
        "fps": rate,
        "codec": "h264",
        "file": file,
        "frames_written": frames,
        "frames_dropped": 0,
    }


def _file_time(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="milliseconds")
    except OSError:
        return None
