"""The store's catalogue: what was recorded, when, on which rig, and how it went (SQLite).

The schema is versioned with `PRAGMA user_version`: `MIGRATIONS[k]` takes a catalogue from version
k to k + 1, and opening a catalogue applies the ones it has not had yet, each in one transaction
with its version bump, so a crash mid-migration leaves the previous version intact. A new version
appends a function; a catalogue written by a newer rig is refused rather than misread.

Tables (v1):
- `sessions`: one per start of the recorder: the profile (name and text), a snapshot of the
  calibration, the rig's version and the host.
- `tasks`: the language instructions, each text once.
- `episodes`: one per recording: its task, timing, step count, rate, `status` (`recording` ->
  `complete` | `interrupted`), `outcome` (`success` | `failure` | NULL for unknown), notes, the
  twin's reward, and video frames dropped per camera (JSON).
- `camera_streams`: one row per camera per episode: the video file and its frame counts.
- `training_runs`: a π0 training run's config (JSON), status and checkpoint.

v2 adds what autonomous episodes need (DAgger-style data):
- `episodes.tags`: comma-separated labels (`eval` keeps a policy rollout out of training data).
- `segments`: labeled step ranges of an episode, `[start_step, end_step)` in record positions (the
  recorder stores each run of autonomous and of intervention steps).

v3 adds `episodes.flags`: what makes an episode no demonstration, judged from its steps when it ends
(recorder/quality.py), as JSON flag -> reason (`{"idle": "not driven for 4.1 of 8.0 s, ..."}`);
`{}` for a good episode, NULL for one not judged (recorded before v3). Training leaves flagged
episodes out unless asked.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError, Table

from recorder.errors import ADVICE, CatalogueDamagedError, NotInCatalogueError, StoreFullError, rebuild_advice

EPISODE_STATUSES = ("recording", "complete", "interrupted")
OUTCOMES = ("success", "failure")
TRAINING_STATUSES = ("running", "complete", "failed", "interrupted")
EVAL_TAG = "eval"
# Episodes with these tags are not demonstrations: training and its norm stats leave them out.
TRAINING_EXCLUDES = (EVAL_TAG,)

Migration = Callable[[Database], None]


def _v1(db: Database) -> None:
    """The first schema."""
    db.table("sessions").create(
        {
            "id": int,
            "started_at": str,
            "profile": str,
            "profile_snapshot": str,
            "calibration": str,  # JSON
            "rig_version": str,
            "host": str,
        },
        pk="id",
        not_null={"started_at", "profile", "profile_snapshot", "calibration", "rig_version", "host"},
    )
    db.table("tasks").create({"id": int, "text": str}, pk="id", not_null={"text"})
    db.table("tasks").create_index(["text"], unique=True)
    # Written out because sqlite-utils has no AUTOINCREMENT option: without it SQLite hands a deleted
    # episode's id to the next one, and folders, exports and training runs name episodes by id.
    # (`transform()` keeps AUTOINCREMENT, so later migrations can use it on this table.)
    db.execute(
        """CREATE TABLE episodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            task_id INTEGER NOT NULL REFERENCES tasks(id),
            task TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            steps INTEGER NOT NULL DEFAULT 0,
            duration_s REAL NOT NULL DEFAULT 0,
            rate_hz REAL NOT NULL,
            status TEXT NOT NULL,
            outcome TEXT,
            notes TEXT NOT NULL DEFAULT '',
            twin_reward INTEGER,
            frames_dropped TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.table("episodes").create_index(["status"])
    db.table("camera_streams").create(
        {
            "episode_id": int,
            "camera": str,
            "width": int,
            "height": int,
            "fps": float,
            "codec": str,
            "file": str,
            "frames_written": int,
            "frames_dropped": int,
        },
        pk=("episode_id", "camera"),
        not_null={"width", "height", "fps", "codec", "file", "frames_written", "frames_dropped"},
        defaults={"frames_written": 0, "frames_dropped": 0},
        foreign_keys=[("episode_id", "episodes", "id")],
    )
    db.table("training_runs").create(
        {
            "id": int,
            "started_at": str,
            "ended_at": str,
            "config": str,  # JSON
            "status": str,
            "checkpoint": str,
            "notes": str,
        },
        pk="id",
        not_null={"started_at", "config", "status", "notes"},
        defaults={"notes": ""},
    )


def _v2(db: Database) -> None:
    """Episode tags and labeled segments, for autonomous episodes with interventions."""
    db.table("episodes").add_column("tags", str, not_null_default="")
    db.table("segments").create(
        {"id": int, "episode_id": int, "label": str, "start_step": int, "end_step": int},
        pk="id",
        not_null={"episode_id", "label", "start_step", "end_step"},
        foreign_keys=[("episode_id", "episodes", "id")],
    )
    db.table("segments").create_index(["episode_id"])


def _v3(db: Database) -> None:
    """Episode quality flags (NULL: not judged)."""
    db.table("episodes").add_column("flags", str)


MIGRATIONS: tuple[Migration, ...] = (_v1, _v2, _v3)


class SchemaTooNewError(RuntimeError):
    """The catalogue was written by a newer rig; reading it with this one could lose data."""


# ---- records --------------------------------------------------------------------------------------


class StreamSpec(Protocol):
    """What `start_episode` needs to know of a camera stream: a `CameraStream`, a record, or a dict
    with these keys."""

    @property
    def camera(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def fps(self) -> float: ...
    @property
    def codec(self) -> str: ...
    @property
    def file(self) -> str: ...


@dataclass(frozen=True)
class CameraStream:
    """A camera's video in an episode, as planned when the episode starts."""

    camera: str
    width: int
    height: int
    fps: float
    codec: str
    file: str  # relative to the episode's folder


@dataclass(frozen=True)
class CameraStreamRecord:
    episode_id: int
    camera: str
    width: int
    height: int
    fps: float
    codec: str
    file: str
    frames_written: int
    frames_dropped: int


@dataclass(frozen=True)
class Segment:
    """A labeled run of an episode's steps: record positions `start_step` up to, not including,
    `end_step`."""

    label: str
    start_step: int
    end_step: int

    def __post_init__(self) -> None:
        if not self.label.strip():
            raise ValueError("a segment needs a label")
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(f"segment {self.label!r}: steps {self.start_step}..{self.end_step} are empty")

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass(frozen=True, kw_only=True)
class SegmentRecord(Segment):
    id: int
    episode_id: int


@dataclass(frozen=True)
class SessionRecord:
    id: int
    started_at: str  # ISO 8601, UTC
    profile: str
    profile_snapshot: str
    calibration: Mapping[str, Any]
    rig_version: str
    host: str


@dataclass(frozen=True)
class EpisodeRecord:
    id: int
    session_id: int
    task_id: int
    task: str
    started_at: str  # ISO 8601, UTC
    ended_at: str | None
    steps: int
    duration_s: float
    rate_hz: float
    status: str
    outcome: str | None
    notes: str
    twin_reward: int | None
    frames_dropped: Mapping[str, int]
    tags: tuple[str, ...] = ()
    flags: Mapping[str, str] | None = None  # flag -> reason (recorder/quality.py); None: not judged

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


@dataclass(frozen=True)
class TrainingRunRecord:
    id: int
    started_at: str
    ended_at: str | None
    config: Mapping[str, Any]
    status: str
    checkpoint: str | None
    notes: str


def now() -> str:
    """The catalogue's timestamps: ISO 8601 in UTC, readable in any SQLite browser."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _check_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """Tags as stored: each once, in the order given; none empty or holding a comma (the separator)."""
    if isinstance(tags, str):
        raise TypeError(f"tags {tags!r}: expected a sequence of tags, not one string")
    for tag in tags:
        if not tag.strip() or tag != tag.strip() or "," in tag:
            raise ValueError(f"tag {tag!r}: needs to be non-empty, without a comma or surrounding spaces")
    return tuple(dict.fromkeys(tags))


def _one_of(value: str | None, allowed: Sequence[str | None], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} {value!r}: expected one of {', '.join(map(repr, allowed))}")


# ---- the catalogue --------------------------------------------------------------------------------


class Catalogue:
    """The catalogue file, open. Safe to share between threads (the recorder's writer thread and the
    TUI's): every method holds the catalogue's lock.

    A damaged file (or one emptied to 0 bytes, which SQLite would take for a new catalogue) is
    refused with CatalogueDamagedError, and a write that finds the disk full raises StoreFullError.
    `on_change`, when set, is called with an episode's id after each change to that episode (the
    store keeps a copy of its rows in the episode's folder)."""

    def __init__(self, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.on_change: Callable[[int], None] | None = None
        if self.path.exists() and self.path.stat().st_size == 0:
            raise CatalogueDamagedError(
                f"{self.path} is empty (0 bytes): the catalogue was lost, the episode folders were not. "
                + rebuild_advice(self.path.parent)
            )
        self.db = Database(sqlite3.connect(self.path, check_same_thread=False))
        self._lock = threading.RLock()
        try:
            with self._sqlite_errors():
                self.db.execute("PRAGMA busy_timeout = 5000")  # another process may be writing
                self.db.enable_wal()  # readers (training, the TUI) never block the recorder
                self.db.execute("PRAGMA synchronous = FULL")  # a committed episode survives a power cut
                self.db.execute("PRAGMA foreign_keys = ON")
                _check_integrity(self.db, self.path)
                _migrate(self.db, migrations, self.path)
        except BaseException:
            self.db.close()
            raise

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """SQLite's errors as the store's: a full disk, a damaged file (with what to do)."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "full" not in str(error) and "disk I/O" not in str(error):
                raise  # e.g. locked past the busy timeout: not the store's fault
            raise StoreFullError(
                f"{self.path}: the catalogue could not be written ({error}): the disk is full (or failing). "
                f"{ADVICE}"
            ) from error
        except sqlite3.DatabaseError as error:
            raise CatalogueDamagedError(
                f"{self.path} is damaged ({error}). {rebuild_advice(self.path.parent)}"
            ) from error

    @property
    def schema_version(self) -> int:
        return _user_version(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def _atomic(self) -> Iterator[Database]:
        with self._lock, self._sqlite_errors(), self.db.atomic():
            yield self.db

    def _changed(self, episode_id: int) -> None:
        if self.on_change is not None:
            self.on_change(episode_id)

    def _table(self, name: str) -> Table:
        return self.db.table(name)

    # ---- sessions ----
    def start_session(
        self,
        *,
        profile: str,
        profile_snapshot: str,
        calibration: Mapping[str, Any],
        rig_version: str,
        host: str | None = None,
    ) -> int:
        """A recorder start: what the rig was, so an episode can be read years later."""
        row = {
            "started_at": now(),
            "profile": profile,
            "profile_snapshot": profile_snapshot,
            "calibration": json.dumps(calibration),
            "rig_version": rig_version,
            "host": host or socket.gethostname(),
        }
        with self._atomic():
            return _pk(self._table("sessions").insert(row))

    def session_row(self, session_id: int) -> dict[str, Any]:
        """The session's row as stored (its calibration as JSON text)."""
        return self._get("sessions", session_id)

    def session(self, session_id: int) -> SessionRecord:
        row = self._get("sessions", session_id)
        return SessionRecord(**{**row, "calibration": json.loads(row["calibration"])})

    # ---- tasks ----
    def tasks(self) -> dict[int, str]:
        """Every task text by id."""
        with self._lock, self._sqlite_errors():
            return {row["id"]: row["text"] for row in self._table("tasks").rows_where(order_by="id")}

    # ---- episodes ----
    def start_episode(
        self,
        session_id: int,
        task: str,
        rate_hz: float,
        cameras: Sequence[StreamSpec | Mapping[str, Any]] = (),
        tags: Sequence[str] = (),
    ) -> int:
        """A new episode, `recording`, with its camera streams planned."""
        if not task.strip():
            raise ValueError("an episode needs a task")
        tags = _check_tags(tags)
        with self._atomic():
            self._get("sessions", session_id)
            task_id = self._table("tasks").lookup({"text": task})
            row = {
                "session_id": session_id,
                "task_id": task_id,
                "task": task,
                "started_at": now(),
                "rate_hz": rate_hz,
                "status": "recording",
                "tags": ",".join(tags),
            }
            episode_id = _pk(self._table("episodes").insert(row))
            streams = [_stream_row(episode_id, spec) for spec in cameras]
            self._table("camera_streams").insert_all(streams)
            return episode_id

    def finish_episode(
        self,
        episode_id: int,
        *,
        steps: int,
        duration_s: float,
        status: str,
        frames_dropped: Mapping[str, int],
        outcome: str | None = None,
        twin_reward: int | None = None,
        ended_at: str | None = None,
        segments: Sequence[Segment] = (),
        flags: Mapping[str, str] | None = None,
    ) -> None:
        """An episode's end: `complete`, or `interrupted` (the recording stopped early); its segments
        and quality flags (None: not judged) go in with it, in one transaction, so a crash never
        leaves a finished episode without them."""
        _one_of(status, ("complete", "interrupted"), "finished episode status")
        _one_of(outcome, (*OUTCOMES, None), "outcome")
        updates: dict[str, Any] = {
            "steps": steps,
            "duration_s": duration_s,
            "status": status,
            "frames_dropped": json.dumps(dict(frames_dropped)),
            "outcome": outcome,
            "twin_reward": twin_reward,
            "ended_at": ended_at or now(),
        }
        if flags is not None:
            updates["flags"] = _flags_json(flags)
        with self._atomic():
            self._update("episodes", episode_id, updates)
            self._insert_segments(episode_id, segments)
        self._changed(episode_id)

    def update_stream(self, episode_id: int, camera: str, frames_written: int, frames_dropped: int) -> None:
        self._update(
            "camera_streams",
            (episode_id, camera),
            {"frames_written": frames_written, "frames_dropped": frames_dropped},
        )
        self._changed(episode_id)

    def set_outcome(self, episode_id: int, outcome: str | None) -> None:
        """The operator's verdict (or back to unknown with None)."""
        _one_of(outcome, (*OUTCOMES, None), "outcome")
        self._update_episode(episode_id, {"outcome": outcome})

    def set_notes(self, episode_id: int, notes: str) -> None:
        self._update_episode(episode_id, {"notes": notes})

    def set_flags(self, episode_id: int, flags: Mapping[str, str]) -> None:
        """The episode's quality flags (flag -> reason), replacing any it had."""
        self._update_episode(episode_id, {"flags": _flags_json(flags)})

    def set_tags(self, episode_id: int, tags: Sequence[str]) -> None:
        """Replace the episode's tags."""
        self._update_episode(episode_id, {"tags": ",".join(_check_tags(tags))})

    def _update_episode(self, episode_id: int, updates: Mapping[str, Any]) -> None:
        self._update("episodes", episode_id, updates)
        self._changed(episode_id)

    def add_segments(self, episode_id: int, segments: Sequence[Segment]) -> None:
        """Label ranges of the episode's steps (added to those it has)."""
        self._insert_segments(episode_id, segments)
        self._changed(episode_id)

    def _insert_segments(self, episode_id: int, segments: Sequence[Segment]) -> None:
        rows = [
            {"episode_id": episode_id, "label": s.label, "start_step": s.start_step, "end_step": s.end_step}
            for s in segments
        ]
        with self._atomic():
            self._get("episodes", episode_id)
            if rows:
                self._table("segments").insert_all(rows)

    def segments(self, episode_id: int) -> list[SegmentRecord]:
        """The episode's segments in step order."""
        with self._lock, self._sqlite_errors():
            rows = self._table("segments").rows_where(
                "episode_id = ?", [episode_id], order_by="start_step, id"
            )
            return [SegmentRecord(**row) for row in rows]

    def episode(self, episode_id: int) -> EpisodeRecord:
        return _episode(self._get("episodes", episode_id))

    def episodes(
        self,
        status: str | None = None,
        tag: str | None = None,
        exclude_tag: str | Sequence[str] | None = None,
        flagged: bool | None = None,
    ) -> list[EpisodeRecord]:
        """Episodes in the order they were recorded: all, or those with `status`, with `tag`,
        without `exclude_tag` (one tag, or any of several), and flagged or not (`flagged`; an
        episode never judged counts as not flagged)."""
        where, values = [], []
        if status is not None:
            _one_of(status, EPISODE_STATUSES, "episode status")
            where.append("status = ?")
            values.append(status)
        if tag is not None:
            where.append(_HAS_TAG)
            values.append(tag)
        excluded = (exclude_tag,) if isinstance(exclude_tag, str) else tuple(exclude_tag or ())
        where += [f"NOT {_HAS_TAG}"] * len(excluded)
        values += excluded
        if flagged is not None:
            where.append(_FLAGGED if flagged else f"NOT {_FLAGGED}")
        with self._lock, self._sqlite_errors():
            rows = self._table("episodes").rows_where(" AND ".join(where) or None, values, order_by="id")
            return [_episode(row) for row in rows]

    def training_episodes(
        self,
        episodes: Sequence[int] | None = None,
        exclude_tags: Sequence[str] = TRAINING_EXCLUDES,
        include_flagged: bool = False,
    ) -> list[EpisodeRecord]:
        """What training reads (windows and norm stats alike): complete episodes, all or those listed,
        less those tagged `exclude_tags` and, unless `include_flagged`, those flagged. Raises
        ValueError saying what was left out when nothing is left."""
        found = self.episodes(status="complete", exclude_tag=exclude_tags)
        listed = [e for e in found if episodes is None or e.id in episodes]
        chosen = [e for e in listed if include_flagged or not e.flagged]
        if not chosen:
            without = f" without tags {', '.join(exclude_tags)}" if exclude_tags else ""
            flagged = len(listed) - len(chosen)
            hint = (
                f"; {flagged} flagged (`rig episodes` says why; --include-flagged trains on them)"
                if flagged
                else ""
            )
            raise ValueError(f"{self.path.parent}: no complete episodes{without} to train on{hint}")
        return chosen

    def streams(self, episode_id: int) -> list[CameraStreamRecord]:
        with self._lock, self._sqlite_errors():
            rows = self._table("camera_streams").rows_where("episode_id = ?", [episode_id], order_by="rowid")
            return [CameraStreamRecord(**row) for row in rows]

    def delete_episode(self, episode_id: int) -> None:
        """The episode's row and its streams' and segments' rows (the store removes its folder)."""
        with self._atomic():
            self._get("episodes", episode_id)
            self._table("camera_streams").delete_where("episode_id = ?", [episode_id])
            self._table("segments").delete_where("episode_id = ?", [episode_id])
            self._table("episodes").delete(episode_id)

    # ---- training runs ----
    def start_training_run(self, config: Mapping[str, Any], notes: str = "") -> int:
        row = {"started_at": now(), "config": json.dumps(config), "status": "running", "notes": notes}
        with self._atomic():
            return _pk(self._table("training_runs").insert(row))

    def finish_training_run(
        self, run_id: int, *, status: str, checkpoint: str | None = None, notes: str | None = None
    ) -> None:
        _one_of(status, TRAINING_STATUSES[1:], "finished training run status")
        updates: dict[str, Any] = {"status": status, "checkpoint": checkpoint, "ended_at": now()}
        if notes is not None:
            updates["notes"] = notes
        self._update("training_runs", run_id, updates)

    def training_run(self, run_id: int) -> TrainingRunRecord:
        return _training_run(self._get("training_runs", run_id))

    def training_runs(self) -> list[TrainingRunRecord]:
        with self._lock, self._sqlite_errors():
            return [_training_run(row) for row in self._table("training_runs").rows_where(order_by="id")]

    # ---- an episode's rows, kept in its folder for rebuilding the catalogue ----
    def snapshot(self, episode_id: int) -> dict[str, Any]:
        """Every row the catalogue holds about an episode, its session's included, as plain JSON
        values: what putting the episode back into an empty catalogue (`restore`) needs."""
        with self._lock, self._sqlite_errors():
            episode = self._get("episodes", episode_id)
            segments = self._table("segments").rows_where(
                "episode_id = ?", [episode_id], order_by="start_step"
            )
            streams = self._table("camera_streams").rows_where(
                "episode_id = ?", [episode_id], order_by="rowid"
            )
            return {
                "episode": episode,
                "session": self._get("sessions", episode["session_id"]),
                "streams": [_without(row, "episode_id") for row in streams],
                "segments": [_without(row, "id", "episode_id") for row in segments],
            }

    def restore(self, snapshot: Mapping[str, Any]) -> int:
        """Put an episode back from its `snapshot`, under its own id, with its session unless one with
        that id is here already; columns this catalogue does not know are left out. Returns the id."""
        with self._atomic():
            session = self._known_columns("sessions", snapshot["session"])
            if not self._table("sessions").count_where("id = ?", [session["id"]]):
                self._table("sessions").insert(session)
            episode = self._known_columns("episodes", snapshot["episode"])
            episode["task_id"] = self._table("tasks").lookup({"text": episode["task"]})
            self._table("episodes").insert(episode)
            streams = [self._known_columns("camera_streams", row) for row in snapshot["streams"]]
            self._table("camera_streams").insert_all(
                [{**row, "episode_id": episode["id"]} for row in streams]
            )
            self._insert_segments(episode["id"], [Segment(**row) for row in snapshot["segments"]])
        return int(episode["id"])

    def _known_columns(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        known = self._table(table).columns_dict
        return {name: value for name, value in row.items() if name in known}

    # ---- helpers ----
    def _get(self, table: str, key: Any) -> dict[str, Any]:
        with self._lock, self._sqlite_errors():
            try:
                return self._table(table).get(key)
            except NotFoundError:
                if table == "episodes":
                    root = self.path.parent
                    raise NotInCatalogueError(
                        f"{root}: no episode {key}; `rig episodes --store {root}` lists them"
                    ) from None
                raise NotInCatalogueError(f"{self.path}: no {table} row {key!r}") from None

    def _update(self, table: str, key: Any, updates: Mapping[str, Any]) -> None:
        with self._atomic():
            self._get(table, key)
            self._table(table).update(key, dict(updates))


def _without(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in names}


def _pk(table: Table) -> int:
    assert table.last_pk is not None
    return int(table.last_pk)


def _stream_row(episode_id: int, spec: StreamSpec | Mapping[str, Any]) -> dict[str, Any]:
    fields = ("camera", "width", "height", "fps", "codec", "file")
    if isinstance(spec, Mapping):
        return {"episode_id": episode_id, **{name: spec[name] for name in fields}}
    return {"episode_id": episode_id, **{name: getattr(spec, name) for name in fields}}


# Whether the comma-separated `tags` holds the tag bound to `?`.
_HAS_TAG = "instr(',' || tags || ',', ',' || ? || ',') > 0"
# Whether the episode was judged and found wanting (flags are stored with sorted keys, `{}` for none).
_FLAGGED = "coalesce(flags, '{}') != '{}'"


def _flags_json(flags: Mapping[str, str]) -> str:
    return json.dumps(dict(flags), sort_keys=True)


def _episode(row: Mapping[str, Any]) -> EpisodeRecord:
    tags = tuple(tag for tag in row["tags"].split(",") if tag)
    flags = None if row["flags"] is None else json.loads(row["flags"])
    return EpisodeRecord(
        **{**row, "frames_dropped": json.loads(row["frames_dropped"]), "tags": tags, "flags": flags}
    )


def _training_run(row: Mapping[str, Any]) -> TrainingRunRecord:
    return TrainingRunRecord(**{**row, "config": json.loads(row["config"])})


def _check_integrity(db: Database, path: Path) -> None:
    """SQLite's own check of the file's pages and indexes (fast on a catalogue's size)."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(f"{'; '.join(problems[:3])}")


def _user_version(db: Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _migrate(db: Database, migrations: Sequence[Migration], path: Path) -> None:
    """Apply the migrations a catalogue has not had, each atomically with its version bump."""
    if _user_version(db) > len(migrations):
        raise SchemaTooNewError(
            f"{path}: catalogue schema v{_user_version(db)} was written by a newer rig; this one knows up"
            f" to v{len(migrations)}. Upgrade rig to open this store."
        )
    while (version := _user_version(db)) < len(migrations):
        with db.atomic():
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
