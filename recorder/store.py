"""The episode store: a folder holding the catalogue and one folder of files per episode.

```
<root>/catalogue.db          the catalogue (recorder/catalogue.py)
<root>/episodes/000042/      steps.json, steps.bin (recorder/steps.py), <camera>.mp4, episode.json
                             (the catalogue's rows about it, recorder/episode_file.py)
<root>/lock                  held (flock) by the one process allowed to record here
```

Opening a store with the lock recovers what a dead process left: an episode still `recording` has
no process recording it any more, so it becomes `interrupted`, with as many steps as reached the
disk and the segments those steps' modes make (as a finished recording would have had). It also
judges, from their steps, the episodes never judged (recovered ones, those recorded before judging
existed: recorder/quality.py), so that training leaves out the ones that held or never moved.
A store opened without the lock (to read it) recovers too when it finds an episode `recording` and
the lock free: then no process is recording, whatever the catalogue says, and every command shows a
dead writer's episode as interrupted, with the steps that reached the disk. Recovery also counts
the frames that reached each video, so steps whose frame was lost with the process show as dropped.
Nothing is deleted except by `delete_episode`; a damaged catalogue is refused, never replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np

from recorder.catalogue import Catalogue, EpisodeRecord
from recorder.episode_file import write_episode_file
from recorder.errors import ADVICE, NoStoreError, StoreFullError, StoreLockedError
from recorder.quality import judge_episode
from recorder.steps import RECORDS, duration_of, fsync_dir, labeled_segments, read_steps, step_dtype

__all__ = ["Store", "StoreFullError", "StoreLockedError", "catalogue_of"]

CATALOGUE = "catalogue.db"
EPISODES = "episodes"
LOCK = "lock"
LOCK_WAIT_S = 2.0  # a reader holds the lock for a moment while it recovers a dead writer's episode
LOCK_POLL_S = 0.05


@contextlib.contextmanager
def catalogue_of(root: Path) -> Iterator[Catalogue]:
    """The catalogue of the store at `root`, for a quick read (or a training run's note) beside a
    recorder: no lock, no recovery, nothing created. Reads that need recovered episodes, and every
    change to episodes, open the `Store`; these two are the only ways to a store."""
    catalogue = Catalogue(Path(root) / CATALOGUE)
    try:
        yield catalogue
    finally:
        catalogue.close()


class Store:
    """A store folder, open.

    `lock=False` opens it for reading beside a recorder (training, export, browsing): no lock is
    taken and nothing is recovered, since an episode `recording` may then be another process's live
    one.
    """

    def __init__(self, root: Path, create: bool = True, lock: bool = True) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NoStoreError(f"{self.root} is a file, not a store folder; give --store a folder")
        if not (self.root / CATALOGUE).exists():
            if not create:
                raise NoStoreError(
                    f"{self.root}: no episodes recorded here yet (no {CATALOGUE}); "
                    "`rig record --task TEXT` records some"
                )
            (self.root / EPISODES).mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.root / LOCK) if lock else None
        try:
            self._forget_unborn_catalogue()
            self.catalogue = Catalogue(self.root / CATALOGUE)
            self.catalogue.on_change = self.keep_episode_file
            self.recovered = tuple(self.recover() if lock else self._recover_if_nobody_records())
            if lock:
                self.judge_unjudged()
        except BaseException:
            if hasattr(self, "catalogue"):
                self.catalogue.close()
            self._release()
            raise

    def _forget_unborn_catalogue(self) -> None:
        """A 0-byte catalogue in a store without episode folders is one whose creator died before
        writing anything: nothing to lose, so it is made anew. (With folders, the catalogue was
        emptied, and Catalogue refuses it.)"""
        path = self.root / CATALOGUE
        folders = self.root / EPISODES
        if path.exists() and path.stat().st_size == 0 and not (folders.is_dir() and any(folders.iterdir())):
            path.unlink()

    def _recover_if_nobody_records(self) -> list[int]:
        """Recover (as the lock's holder would) when an episode is `recording` but no process holds
        the lock; the lock is held only while recovering."""
        if not self.catalogue.episodes(status="recording"):
            return []
        try:
            fd = _take_lock(self.root / LOCK, wait_s=0.0, note_pid=False)
        except StoreLockedError:
            return []  # a recorder is alive: its episode really is being recorded
        except OSError:
            return []  # a store this process may not write (a read-only copy): shown as it is
        try:
            return self.recover()
        except (sqlite3.OperationalError, OSError):  # read-only, or a full disk: shown as it is
            return []
        finally:
            os.close(fd)

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
        self.keep_episode_file(episode_id)
        return path

    def keep_episode_file(self, episode_id: int) -> None:
        """Copy the catalogue's rows about the episode into its folder (for `rebuild_catalogue`)."""
        folder = self.episode_dir(episode_id)
        if folder.is_dir():
            # OSError: the catalogue has the change, the copy catches up with the next one; KeyError:
            # a folder without a row has nothing to copy.
            with contextlib.suppress(OSError, KeyError):
                write_episode_file(folder, self.catalogue.snapshot(episode_id))

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

    def judge_unjudged(self) -> list[int]:
        """Flag the finished episodes that were never judged, from their steps alone (the loop's
        fault events were not kept); returns their ids."""
        unjudged = [e for e in self.catalogue.episodes() if e.flags is None and e.status != "recording"]
        for episode in unjudged:
            try:
                records = read_steps(self.episode_dir(episode.id))
            except (OSError, ValueError):
                continue  # unreadable steps: recovery already said so in the notes
            self.catalogue.set_flags(episode.id, judge_episode(records, rate_hz=episode.rate_hz))
        return [episode.id for episode in unjudged]

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
        dropped = dict(episode.frames_dropped)
        for stream in self.catalogue.streams(episode.id):
            written, dropped[stream.camera] = _frames_kept(path / stream.file, records, stream.camera)
            self.catalogue.update_stream(episode.id, stream.camera, written, dropped[stream.camera])
        self.catalogue.finish_episode(
            episode.id,
            steps=len(records),
            duration_s=duration_of(records, episode.rate_hz),
            status="interrupted",
            frames_dropped=dropped,
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


@contextlib.contextmanager
def held_lock(root: Path) -> Iterator[None]:
    """The store's lock, for work on a store that is not open (rebuilding its catalogue)."""
    fd = _take_lock(Path(root) / LOCK)
    try:
        yield
    finally:
        os.close(fd)


def _take_lock(path: Path, wait_s: float = LOCK_WAIT_S, note_pid: bool = True) -> int:
    """An exclusive flock on the lock file, with our pid in it for whoever is refused (`note_pid`).
    The kernel drops the lock when the process dies, however it dies, so a lock is never stale.
    Waits up to `wait_s` for it: a reader may hold it for the moment it takes to recover."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise StoreLockedError(
                        f"{path.parent} is in use by process {holder}; stop that rig first"
                        " (or open the store with lock=False to read it)"
                    ) from None
                time.sleep(LOCK_POLL_S)
    except BaseException:
        os.close(fd)
        raise
    if note_pid:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _frames_kept(video: Path, records: np.ndarray, camera: str) -> tuple[int, int]:
    """(frames in a dead writer's video, steps of `camera` without a frame there): steps whose frame
    was never encoded, and steps whose frame died with the process before reaching the file."""
    import av  # needed only here

    from recorder.video import VideoReader

    try:
        with VideoReader(video) as reader:
            frames = len(reader)
    except (OSError, ValueError, av.error.FFmpegError):  # no file, or not even a header: no frames
        frames = 0
    field = f"{camera}/video_index"
    if field not in (records.dtype.names or ()):
        return frames, max(0, len(records) - frames)
    index = records[field]
    return frames, int(np.count_nonzero((index < 0) | (index >= frames)))


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
