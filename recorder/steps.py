"""An episode's numeric steps: one fixed-size binary record per control tick, appended as it happens.

An episode folder holds `steps.json`, a header written once (and fsynced) when the episode starts,
and `steps.bin`, the records back to back with no framing. Fixed-size records are what make a crash
cheap: whatever the process managed to write is a run of whole records, perhaps followed by part of
one, so a reader keeps `size // itemsize` records and nothing needs repairing.

A record holds `index` i8, `t` f8, `qpos`/`qvel`/`effort`/`action`/`leader` f4[14], `mode` i1 (the
loop's mode label as its index in `rig.step.MODES`, -1 for a label not there), `policy_action` f4[14]
(the policy's proposal, NaN when no policy ran: during an intervention `action` is the human's), and
per camera `<camera>/timestamp_ms` f8, `<camera>/frame_number` i8 and `<camera>/age_s` f4, which say
which camera frame the tick saw (NaN, -1, NaN when it saw none), and `<camera>/video_index` i8, where
that frame is in the episode's video (-1 when it was not encoded: no frame, or dropped). All
little-endian and packed, so a file reads the same on any machine.

The header stores the layout, so episodes recorded before a field existed still read, without it:
`mode` and `policy_action` are newer than the first episodes, and code that reads them checks
`records.dtype.names` (or uses `labeled_segments`, which does).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from recorder.catalogue import Segment
from recorder.errors import ADVICE, FULL_ERRNOS, StepsFileError, StoreFullError
from rig.step import MODES, STATE_DIM, Step

HEADER = "steps.json"
RECORDS = "steps.bin"
HEADER_VERSION = 1
VECTORS = ("qpos", "qvel", "effort", "action", "leader")
UNKNOWN_MODE = -1
SEGMENT_LABELS = ("autonomous", "intervention")  # the modes whose runs become an episode's segments
_CAMERA_FIELDS = (("timestamp_ms", "<f8"), ("frame_number", "<i8"), ("age_s", "<f4"), ("video_index", "<i8"))


def step_dtype(cameras: Sequence[str]) -> np.dtype:
    """The record layout of an episode with these cameras (order kept)."""
    _check_camera_names(cameras)
    fields: list[tuple[Any, ...]] = [("index", "<i8"), ("t", "<f8")]
    fields += [(name, "<f4", (STATE_DIM,)) for name in VECTORS]
    fields += [("mode", "i1"), ("policy_action", "<f4", (STATE_DIM,))]
    fields += [(f"{camera}/{name}", kind) for camera in cameras for name, kind in _CAMERA_FIELDS]
    return np.dtype(fields)


def _check_camera_names(cameras: Sequence[str]) -> None:
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"camera names repeat: {list(cameras)}")
    for camera in cameras:
        if not camera or "/" in camera:
            raise ValueError(f"camera name {camera!r}: needs to be non-empty and without '/'")


def cameras_of(dtype: np.dtype) -> tuple[str, ...]:
    """The cameras a record layout has fields for, in order."""
    suffix = "/frame_number"
    return tuple(name.removesuffix(suffix) for name in dtype.names or () if name.endswith(suffix))


def mode_index(label: str) -> int:
    """A mode label as recorded: its place in `MODES`, or -1 for one that is not there."""
    return MODES.index(label) if label in MODES else UNKNOWN_MODE


def to_record(step: Step, dtype: np.dtype) -> np.ndarray:
    """One record (a 0-d structured array) of `step`; cameras of the step that the layout lacks are
    left out, cameras of the layout that the step lacks read NaN / -1."""
    record = np.zeros((), dtype)
    record["index"] = step.index
    record["t"] = step.t
    names = dtype.names or ()
    for name in (*VECTORS, "policy_action"):
        value = getattr(step, name)
        if name in names:
            record[name] = np.nan if value is None else _vector(name, value)
    if "mode" in names:
        record["mode"] = mode_index(step.mode)
    for camera in cameras_of(dtype):
        sample = step.cameras.get(camera)
        record[f"{camera}/timestamp_ms"] = np.nan if sample is None else sample.timestamp_ms
        record[f"{camera}/frame_number"] = -1 if sample is None else sample.frame_number
        record[f"{camera}/age_s"] = np.nan if sample is None else sample.age_s
        record[f"{camera}/video_index"] = -1  # the recorder sets it once the frame is queued for encoding
    return record


def _vector(name: str, value: np.ndarray) -> np.ndarray:
    # numpy would broadcast a scalar or a (1,) array into the field without a word.
    array = np.asarray(value, dtype=np.float32)
    if array.shape != (STATE_DIM,):
        raise ValueError(f"step.{name} has shape {array.shape}, a record needs ({STATE_DIM},)")
    return array


def labeled_segments(records: np.ndarray, labels: Sequence[str] = SEGMENT_LABELS) -> list[Segment]:
    """One segment per maximal run of records whose mode is one of `labels`, in record positions
    (what a reader indexes; they differ from `index` where steps were dropped). Records of a layout
    without `mode` (recorded before it existed) have none."""
    if "mode" not in (records.dtype.names or ()) or not len(records):
        return []
    codes = records["mode"]
    edges = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(codes)]
    wanted = {mode_index(label) for label in labels} - {UNKNOWN_MODE}
    return [
        Segment(MODES[codes[start]], int(start), int(end))
        for start, end in zip(starts, ends, strict=True)
        if codes[start] in wanted
    ]


def duration_of(records: np.ndarray, rate_hz: float) -> float:
    """An episode's length on the rig's clock: first step to last, plus the last step's period."""
    return float(records["t"][-1] - records["t"][0]) + 1.0 / rate_hz if len(records) else 0.0


# ---- the header -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepsHeader:
    version: int
    cameras: tuple[str, ...]
    dtype: np.dtype


def read_header(episode_dir: Path) -> StepsHeader:
    """The header of an episode folder; FileNotFoundError when its recording never got that far."""
    path = Path(episode_dir) / HEADER
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing, so this folder holds no steps") from None
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise StepsFileError(f"{path} is damaged ({error}); {_DAMAGED_ADVICE}") from error
    if not isinstance(header, dict) or header.get("version") != HEADER_VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise StepsFileError(f"{path}: header version {version}, this rig reads {HEADER_VERSION}")
    try:
        dtype = np.dtype(
            [(field[0], field[1], *[tuple(shape) for shape in field[2:]]) for field in header["dtype"]]
        )
        cameras = tuple(str(camera) for camera in header["cameras"])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise StepsFileError(
            f"{path} is damaged (no usable record layout: {error}); {_DAMAGED_ADVICE}"
        ) from error
    return StepsHeader(HEADER_VERSION, cameras, dtype)


_DAMAGED_ADVICE = "restore it from a backup, or `rig delete` the episode"


def _write_header(episode_dir: Path, cameras: Sequence[str], dtype: np.dtype) -> None:
    """Temp file, fsync, rename: the header is either absent or whole, never half-written."""
    path = episode_dir / HEADER
    if path.exists():
        raise FileExistsError(f"{path}: an episode is already recorded here")
    text = json.dumps({"version": HEADER_VERSION, "cameras": list(cameras), "dtype": dtype.descr})
    temp = episode_dir / f".{HEADER}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> int:
    """Write every byte (os.write may write fewer); on an error, the OSError carries how many bytes
    made it in `.written`."""
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError as error:
        error.written = done  # type: ignore[attr-defined]
        raise
    return done


def fsync_dir(path: Path) -> None:
    """Make a folder's new entries (files created, renamed or removed) survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- writing and reading --------------------------------------------------------------------------


class StepWriter:
    """Appends an episode's records to `steps.bin`.

    Records wait in memory and go to the file (write + fsync) once `flush_every_s` has passed since
    the last flush, checked at each append, and on `flush()`/`close()`: a crash loses at most that
    much, and the 50 Hz caller pays for a write twice a second instead of every tick. On a full disk
    the writer cuts the file back to whole records, raises `StoreFullError` and refuses further
    records; everything written before stays readable.
    """

    def __init__(
        self,
        episode_dir: Path,
        cameras: Sequence[str],
        flush_every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(episode_dir) / RECORDS
        self.dtype = step_dtype(cameras)
        self.flush_every_s = flush_every_s
        self._clock = clock
        self._pending = bytearray()
        self._written = 0
        self._failure: StoreFullError | None = None
        self._closed = False
        try:
            _write_header(self.path.parent, cameras, self.dtype)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._fd = os.open(self.path, flags, 0o644)
            fsync_dir(self.path.parent)
        except OSError as error:
            if error.errno in FULL_ERRNOS:
                raise StoreFullError(
                    f"{self.path.parent}: no room to start an episode ({_reason(error)}). {ADVICE}"
                ) from error
            raise
        self._last_flush = clock()

    @property
    def steps_written(self) -> int:
        """Records in the file (after `close()`, every record appended, unless the disk filled)."""
        return self._written

    @property
    def steps_appended(self) -> int:
        """Records appended so far, written or waiting for the next flush."""
        return self._written + len(self._pending) // self.dtype.itemsize

    def append(self, record: np.ndarray) -> None:
        """Queue one record (or an array of them); writes when a flush is due."""
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._failure is not None:
            raise self._failure
        if record.dtype != self.dtype:
            raise ValueError(f"{self.path}: record layout {record.dtype} is not the episode's {self.dtype}")
        self._pending += record.tobytes()
        if self._clock() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Write the queued records and fsync them."""
        self._last_flush = self._clock()
        if not self._pending or self._failure is not None:
            return
        data = bytes(self._pending)
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as error:  # an fsync error counts nothing of this flush as written
            self._give_up(error, getattr(error, "written", 0))
        self._written += len(data) // self.dtype.itemsize
        self._pending.clear()

    def _give_up(self, error: OSError, done: int) -> None:
        """Keep the whole records that made it and cut off a partial one. On a full disk, say so and
        stop; on any other error, keep the rest queued for the next flush."""
        itemsize = self.dtype.itemsize
        self._written += done // itemsize
        del self._pending[: done // itemsize * itemsize]
        with contextlib.suppress(OSError):  # shrinking a file needs no space
            os.ftruncate(self._fd, self._written * itemsize)
            os.fsync(self._fd)
        if error.errno not in FULL_ERRNOS:
            raise error
        lost = len(self._pending) // itemsize
        self._pending.clear()
        self._failure = StoreFullError(
            f"{self.path}: out of space ({_reason(error)}). The episode's first {self._written} steps"
            f" are safe on disk; the last {lost} could not be written and recording stopped. {ADVICE}"
        )
        raise self._failure from error

    def close(self) -> None:
        """Flush and close; after a full disk, just close (the error was raised already)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            os.close(self._fd)

    def __enter__(self) -> StepWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _reason(error: OSError) -> str:
    name = errno.errorcode.get(error.errno or 0, "?")
    return f"{name}: {os.strerror(error.errno)}" if error.errno else str(error)


def read_steps(episode_dir: Path) -> np.ndarray:
    """Every whole record of an episode, as a structured array (a crash's partial trailing record is
    left out; no records at all gives an empty array of the episode's layout)."""
    dtype = read_header(episode_dir).dtype
    path = Path(episode_dir) / RECORDS
    try:
        with path.open("rb") as file:
            data = file.read()
    except FileNotFoundError:
        data = b""
    return np.frombuffer(data, dtype, count=len(data) // dtype.itemsize).copy()
