"""The episode store: a folder holding the catalogue and one folder of files per episode.

```
<root>/catalogue.db          the catalogue (recorder/catalogue.py)
<root>/episodes/000042/      steps.json, steps.bin (recorder/steps.py), <camera>.mp4
<root>/lock                  held (flock) by the one process allowed to record here
```

Opening a store with the lock recovers what a dead process left: an episode still `recording` has
no process recording it any more, so it becomes `interrupted`, with as many steps as reached the
disk and the segments those steps' modes make (as a finished recording would have had). Nothing
is deleted except by `delete_episode`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np

from recorder.catalogue import Catalogue, EpisodeRecord
from recorder.errors import ADVICE, StoreFullError
from recorder.steps import RECORDS, duration_of, fsync_dir, labeled_segments, read_steps, step_dtype

__all__ = ["Store", "StoreFullError", "StoreLockedError"]

CATALOGUE = "catalogue.db"
EPISODES = "episodes"
LOCK = "lock"


class StoreLockedError(RuntimeError):
    """Another process holds the store: two recorders in one store would corrupt each other."""


class Store:
    """A store folder, open.

    `lock=False` opens it for reading beside a recorder (training, export, browsing): no lock is
    taken and nothing is recovered, since an episode `recording` may then be another process's live
    one.
    """

    def __init__(self, root: Path, create: bool = True, lock: bool = True) -> None:
        self.root = Path(root)
        if not (self.root / CATALOGUE).exists():
            if not create:
                raise FileNotFoundError(f"{self.root}: no store here (no {CATALOGUE})")
            (self.root / EPISODES).mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.root / LOCK) if lock else None
        try:
            self.catalogue = Catalogue(self.root / CATALOGUE)
            self.recovered = tuple(self.recover()) if lock else ()
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        self.catalogue.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- episodes ----
    def episode_dir(self, episode_id: int) -> Path:
        return self.root / EPISODES / f"{episode_id:06d}"

    def new_episode_dir(self, episode_id: int) -> Path:
        """The folder for a new episode; refuses one that exists rather than mix two recordings."""
        path = self.episode_dir(episode_id)
        path.mkdir(parents=True)
        fsync_dir(path.parent)
        return path

    def episode_size(self, episode_id: int) -> int:
        """Bytes of the episode's files."""
        files = self.episode_dir(episode_id).rglob("*")
        return sum(path.stat().st_size for path in files if path.is_file())

    def delete_episode(self, episode_id: int) -> None:
        """The episode's folder, then its row: a crash in between leaves a row to delete again, never
        a folder that the catalogue has forgotten. Only the lock's holder deletes: without the lock,
        an episode `recording` may be another process's live one."""
        if self._lock_fd is None:
            raise StoreLockedError(f"{self.root} was opened without its lock (lock=False): read-only")
        self.catalogue.episode(episode_id)  # KeyError for an unknown id
        path = self.episode_dir(episode_id)
        if path.exists():
            shutil.rmtree(path)
            fsync_dir(path.parent)
        self.catalogue.delete_episode(episode_id)

    def recover(self) -> list[int]:
        """Mark the episodes a dead process left `recording` as `interrupted`, with the steps that
        reached the disk; their files stay. Returns their ids."""
        episodes = self.catalogue.episodes(status="recording")
        for episode in episodes:
            self._recover(episode)
        return [episode.id for episode in episodes]

    def _recover(self, episode: EpisodeRecord) -> None:
        path = self.episode_dir(episode.id)
        try:
            records = read_steps(path)
        except FileNotFoundError:  # it died before it wrote its header: no steps
            records = np.empty(0, step_dtype(()))
        except (OSError, ValueError) as error:  # keep the files for a human, and say why steps read 0
            records = np.empty(0, step_dtype(()))
            self.catalogue.set_notes(
                episode.id, f"{episode.notes}\nrecovery: unreadable steps: {error}".strip()
            )
        self.catalogue.finish_episode(
            episode.id,
            steps=len(records),
            duration_s=duration_of(records, episode.rate_hz),
            status="interrupted",
            frames_dropped=episode.frames_dropped,
            ended_at=_last_write(path / RECORDS) or episode.started_at,
            segments=labeled_segments(records),
        )

    # ---- space ----
    def free_bytes(self) -> int:
        """Space this process may still use on the store's disk."""
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def check_free_space(self, needed_bytes: int) -> None:
        """Refuse to start what the disk cannot hold, before a recording fills it halfway."""
        free = self.free_bytes()
        if free < needed_bytes:
            raise StoreFullError(
                f"not enough space to record in {self.root}: {_size(free)} free, {_size(needed_bytes)}"
                f" needed. {ADVICE}"
            )


def _take_lock(path: Path) -> int:
    """An exclusive flock on the lock file, with our pid in it for whoever is refused. The kernel
    drops the lock when the process dies, however it dies, so a lock is never stale."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"{path.parent} is in use by process {holder}; stop that rig first"
            " (or open the store with lock=False to read it)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _last_write(path: Path) -> str | None:
    """When a file was last written, as the catalogue writes times: a dead recorder's end."""
    with contextlib.suppress(FileNotFoundError):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="milliseconds")
    return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
