"""The episode store on real files: the catalogue's schema and life cycle, step records, and what
survives a kill, a full disk and a second process."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from sqlite_utils import Database

from recorder.catalogue import MIGRATIONS, CameraStream, Catalogue, SchemaTooNewError
from recorder.steps import RECORDS, StepWriter, read_header, read_steps, step_dtype, to_record
from recorder.store import Store, StoreFullError, StoreLockedError
from rig.step import STATE_DIM, CameraSample, Step

CAMERAS = ("cam_high", "cam_left_wrist")
IMAGE = np.zeros((2, 2, 3), np.uint8)

# A child process records steps whose values follow from their index, so that the test can check
# every record that survived. It prints how many steps it has appended, one line per step.
CHILD_PRELUDE = """
import sys
import numpy as np
from recorder.catalogue import CameraStream
from recorder.steps import StepWriter, to_record
from recorder.store import Store, StoreFullError
from rig.step import Step

def step(i):
    v = np.arange(14, dtype=np.float32) + i
    return Step(index=i, t=i / 50, qpos=v, qvel=-v, effort=v, action=v, leader=v, mode="teleop")

store = Store(sys.argv[1])
session = store.catalogue.start_session(
    profile="aloha-sim", profile_snapshot="", calibration={}, rig_version="0.1.0"
)
episode = store.catalogue.start_episode(session, "transfer the cube", 50.0)
"""

KILLED_CHILD = (
    CHILD_PRELUDE
    + """
import time
writer = StepWriter(store.new_episode_dir(episode), [])
start = time.monotonic()
for i in range(1_000_000):
    time.sleep(max(0.0, start + i / 50 - time.monotonic()))
    writer.append(to_record(step(i), writer.dtype))
    print(i + 1, flush=True)
"""
)

# Flushes 7 records at a time under a file-size limit of 20.5 records: the third flush fails.
DISK_FULL_CHILD = (
    CHILD_PRELUDE
    + """
import resource
writer = StepWriter(store.new_episode_dir(episode), [], flush_every_s=1e9)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(20.5 * writer.dtype.itemsize), hard))
try:
    for i in range(100):
        writer.append(to_record(step(i), writer.dtype))
        if (i + 1) % 7 == 0:
            writer.flush()
except StoreFullError as error:
    print("full", writer.steps_written, i + 1, error, flush=True)
try:
    writer.append(to_record(step(i + 1), writer.dtype))
except StoreFullError:
    print("refused", flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))
try:
    StepWriter(store.new_episode_dir(episode + 1), [])
except StoreFullError as error:
    print("header", error, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
writer.close()
store.catalogue.finish_episode(
    episode, steps=writer.steps_written, duration_s=0.0, status="interrupted", frames_dropped={}
)
"""
)


def run_child(script: str, root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def make_step(i: int, cameras: tuple[str, ...] = CAMERAS, leader: bool = True) -> Step:
    rng = np.random.default_rng(i)
    samples = {
        name: CameraSample(IMAGE, timestamp_ms=1000.0 + 20 * i + k, frame_number=i + k, age_s=0.004 * k)
        for k, name in enumerate(cameras)
    }
    return Step(
        index=i,
        t=i / 50,
        qpos=rng.normal(size=STATE_DIM),
        qvel=rng.normal(size=STATE_DIM),
        effort=rng.normal(size=STATE_DIM),
        action=rng.normal(size=STATE_DIM),
        leader=rng.normal(size=STATE_DIM) if leader else None,
        mode="teleop",
        cameras=MappingProxyType(samples),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store") as opened:
        yield opened


def new_episode(store: Store, task: str = "transfer the cube") -> int:
    session = store.catalogue.start_session(
        profile="aloha-sim", profile_snapshot="base = 'aloha'", calibration={"arm": 1}, rig_version="0.1.0"
    )
    streams = [CameraStream(name, 640, 480, 50.0, "h264", f"{name}.mp4") for name in CAMERAS]
    return store.catalogue.start_episode(session, task, 50.0, streams)


# ---- the catalogue's schema --------------------------------------------------------------------


def test_a_new_catalogue_is_at_the_latest_schema_version_in_wal_mode(tmp_path: Path) -> None:
    catalogue = Catalogue(tmp_path / "catalogue.db")
    assert catalogue.schema_version == len(MIGRATIONS) >= 1
    assert catalogue.db.journal_mode == "wal"
    tables = {"sessions", "tasks", "episodes", "camera_streams", "training_runs"}
    assert tables <= set(catalogue.db.table_names())


def test_a_version_0_file_is_migrated_on_open_and_keeps_what_it_held(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    with sqlite3.connect(path) as conn:  # a catalogue from before the schema had a version
        conn.execute("CREATE TABLE scratch (note TEXT)")
        conn.execute("INSERT INTO scratch VALUES ('keep me')")
    conn.close()
    catalogue = Catalogue(path)
    assert catalogue.schema_version == len(MIGRATIONS)
    assert "episodes" in catalogue.db.table_names()
    assert [row["note"] for row in catalogue.db.table("scratch").rows] == ["keep me"]


def add_reviewed(db: Database) -> None:
    db.table("episodes").transform(types={"notes": str}, defaults={"notes": "none"})
    db.table("episodes").add_column("reviewed", int, not_null_default=0)


def test_an_appended_migration_runs_once_on_an_older_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    with Store(tmp_path) as store:
        episode = new_episode(store)
    catalogue = Catalogue(path, [*MIGRATIONS, add_reviewed])
    assert catalogue.schema_version == len(MIGRATIONS) + 1
    assert catalogue.db.table("episodes").get(episode)["reviewed"] == 0
    catalogue.close()
    reopened = Catalogue(path, [*MIGRATIONS, add_reviewed])
    assert reopened.schema_version == len(MIGRATIONS) + 1  # not applied twice


def test_a_failed_migration_leaves_the_previous_version_whole(tmp_path: Path) -> None:
    def half_done(db: Database) -> None:
        db.table("extra").create({"id": int}, pk="id")
        raise RuntimeError("power cut")

    path = tmp_path / "catalogue.db"
    Catalogue(path).close()
    with pytest.raises(RuntimeError, match="power cut"):
        Catalogue(path, [*MIGRATIONS, half_done])
    catalogue = Catalogue(path)
    assert catalogue.schema_version == len(MIGRATIONS) and "extra" not in catalogue.db.table_names()


def test_a_catalogue_from_a_newer_rig_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    Catalogue(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="v99"):
        Catalogue(path)


# ---- the catalogue's records -------------------------------------------------------------------


def test_an_episode_life_cycle(store: Store) -> None:
    catalogue = store.catalogue
    episode = new_episode(store)
    record = catalogue.episode(episode)
    assert (record.status, record.task, record.rate_hz, record.outcome) == (
        "recording",
        "transfer the cube",
        50.0,
        None,
    )
    assert catalogue.session(record.session_id).calibration == {"arm": 1}
    assert [s.camera for s in catalogue.streams(episode)] == list(CAMERAS)

    catalogue.update_stream(episode, "cam_high", frames_written=99, frames_dropped=1)
    catalogue.finish_episode(
        episode,
        steps=100,
        duration_s=2.0,
        status="complete",
        frames_dropped={"cam_high": 1, "cam_left_wrist": 0},
        outcome="success",
        twin_reward=4,
    )
    catalogue.set_notes(episode, "clean grasp")
    record = catalogue.episode(episode)
    assert (record.status, record.steps, record.outcome, record.twin_reward) == (
        "complete",
        100,
        "success",
        4,
    )
    assert record.frames_dropped == {"cam_high": 1, "cam_left_wrist": 0} and record.notes == "clean grasp"
    assert record.ended_at is not None and record.ended_at >= record.started_at
    assert catalogue.streams(episode)[0].frames_written == 99

    catalogue.set_outcome(episode, None)
    assert catalogue.episode(episode).outcome is None
    with pytest.raises(ValueError, match="outcome"):
        catalogue.set_outcome(episode, "great")
    second = new_episode(store)
    third = new_episode(store, "insert the peg")
    assert [e.id for e in catalogue.episodes(status="recording")] == [second, third]
    assert [e.id for e in catalogue.episodes()] == [episode, second, third]
    assert sorted(catalogue.tasks().values()) == ["insert the peg", "transfer the cube"]
    with pytest.raises(KeyError, match="no episode 999; `rig episodes --store "):
        catalogue.episode(999)


def test_training_runs_are_recorded(store: Store) -> None:
    run = store.catalogue.start_training_run({"model": "pi0-small", "steps": 10})
    assert store.catalogue.training_run(run).status == "running"
    store.catalogue.finish_training_run(run, status="complete", checkpoint="ckpt/10.safetensors")
    (record,) = store.catalogue.training_runs()
    assert (record.status, record.checkpoint, record.config["steps"]) == (
        "complete",
        "ckpt/10.safetensors",
        10,
    )


# ---- step records ------------------------------------------------------------------------------


def test_steps_round_trip_through_the_file(tmp_path: Path) -> None:
    steps = [make_step(0), make_step(1, cameras=("cam_high",), leader=False), make_step(2)]
    with StepWriter(tmp_path, CAMERAS) as writer:
        for step in steps:
            writer.append(to_record(step, writer.dtype))
    assert writer.steps_written == 3
    records = read_steps(tmp_path)
    assert records.dtype == step_dtype(CAMERAS) and read_header(tmp_path).cameras == CAMERAS
    for record, step in zip(records, steps, strict=True):
        assert (record["index"], record["t"]) == (step.index, step.t)
        for name in ("qpos", "qvel", "effort", "action"):
            np.testing.assert_array_equal(record[name], getattr(step, name).astype(np.float32))
        for camera in CAMERAS:
            sample = step.cameras.get(camera)
            seen = (record[f"{camera}/frame_number"], record[f"{camera}/timestamp_ms"])
            assert seen == ((sample.frame_number, sample.timestamp_ms) if sample else (-1, seen[1]))
    assert np.isnan(records[1]["leader"]).all() and not np.isnan(records[0]["leader"]).any()
    missing = records[1]
    assert np.isnan(missing["cam_left_wrist/timestamp_ms"]) and np.isnan(missing["cam_left_wrist/age_s"])
    assert missing["cam_high/frame_number"] == 1


def test_a_record_refuses_a_vector_of_the_wrong_length() -> None:
    step = make_step(0)
    bad = Step(0, 0.0, np.zeros(7), step.qvel, step.effort, step.action, None, "teleop")
    with pytest.raises(ValueError, match="qpos"):
        to_record(bad, step_dtype(CAMERAS))


def test_a_partial_trailing_record_is_ignored(tmp_path: Path) -> None:
    with StepWriter(tmp_path, CAMERAS) as writer:
        for i in range(5):
            writer.append(to_record(make_step(i), writer.dtype))
    with (tmp_path / RECORDS).open("ab") as file:  # a crash in the middle of a write
        file.write(to_record(make_step(5), writer.dtype).tobytes()[:17])
    records = read_steps(tmp_path)
    assert list(records["index"]) == [0, 1, 2, 3, 4]


def test_no_records_read_as_an_empty_array_of_the_episode_layout(tmp_path: Path) -> None:
    StepWriter(tmp_path, CAMERAS).close()
    assert read_steps(tmp_path).shape == (0,) and read_steps(tmp_path).dtype == step_dtype(CAMERAS)
    (tmp_path / RECORDS).unlink()
    assert read_steps(tmp_path).shape == (0,) and read_steps(tmp_path).dtype == step_dtype(CAMERAS)


def test_records_reach_the_file_once_the_flush_period_has_passed(tmp_path: Path) -> None:
    now = [0.0]
    writer = StepWriter(tmp_path, CAMERAS, flush_every_s=0.5, clock=lambda: now[0])
    for i in range(24):  # 0.00 .. 0.46 s at 50 Hz
        now[0] = i / 50
        writer.append(to_record(make_step(i), writer.dtype))
    assert len(read_steps(tmp_path)) == 0 and writer.steps_written == 0
    now[0] = 0.5
    writer.append(to_record(make_step(25), writer.dtype))
    assert len(read_steps(tmp_path)) == 25 == writer.steps_written
    writer.close()


def test_a_writer_never_overwrites_an_episode(tmp_path: Path) -> None:
    StepWriter(tmp_path, CAMERAS).close()
    with pytest.raises(FileExistsError):
        StepWriter(tmp_path, CAMERAS)


# ---- crashes, full disks, other processes -------------------------------------------------------


def test_a_killed_recorder_loses_at_most_the_last_second(tmp_path: Path) -> None:
    root = tmp_path / "store"
    child = run_child(KILLED_CHILD, root)
    assert child.stdout is not None
    reported, deadline = 0, time.monotonic() + 30
    while reported < 150 and time.monotonic() < deadline:  # ~3 s of steps at 50 Hz
        if select.select([child.stdout], [], [], 1.0)[0]:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            reported = int(line)
    os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=10)
    reported = max([reported, *map(int, rest.split())])
    assert child.returncode == -signal.SIGKILL and reported >= 150

    with Store(root) as store:  # the dead child's lock is gone with it
        (episode,) = store.catalogue.episodes()
        assert store.recovered == (episode.id,)
        records = read_steps(store.episode_dir(episode.id))
    assert episode.status == "interrupted" and episode.steps == len(records)
    assert reported - 50 <= len(records) <= reported + 1
    np.testing.assert_array_equal(records["index"], np.arange(len(records)))
    expected = np.arange(STATE_DIM, dtype=np.float32) + records["index"][:, None]
    np.testing.assert_array_equal(records["qpos"], expected)
    np.testing.assert_array_equal(records["qvel"], -expected)
    assert episode.duration_s == pytest.approx(len(records) / 50)


def test_a_full_disk_raises_store_full_and_keeps_what_was_written(tmp_path: Path) -> None:
    root = tmp_path / "store"
    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(root)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("full 20 21 ")  # flushes of 7: 6.5 of the third 7 fit
    assert "EFBIG" in lines[0] and "first 20 steps are safe" in lines[0] and "last 1 " in lines[0]
    assert lines[1] == "refused" and lines[2].startswith("header ")

    with Store(root) as store:
        episode = store.catalogue.episodes()[0]
        records = read_steps(store.episode_dir(episode.id))
        size = (store.episode_dir(episode.id) / RECORDS).stat().st_size
    assert size == 20 * records.dtype.itemsize  # the half record was cut off
    assert episode.steps == 20 and list(records["index"]) == list(range(20))


def test_check_free_space_says_what_is_free_and_needed(store: Store) -> None:
    store.check_free_space(1024)
    with pytest.raises(StoreFullError, match=r"free, .* needed\. Free space"):
        store.check_free_space(store.free_bytes() + 2**50)


def test_recover_marks_an_unfinished_episode_interrupted_and_keeps_its_files(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        episode = new_episode(store)
        never_started = new_episode(store)  # died between its row and its folder
        with StepWriter(store.new_episode_dir(episode), CAMERAS) as writer:
            for i in range(10):
                writer.append(to_record(make_step(i), writer.dtype))
    with Store(tmp_path) as store:
        assert store.recovered == (episode, never_started)
        record = store.catalogue.episode(episode)
        assert (record.status, record.steps, record.duration_s) == ("interrupted", 10, pytest.approx(0.2))
        assert store.catalogue.episode(never_started).steps == 0
        assert len(read_steps(store.episode_dir(episode))) == 10
    with Store(tmp_path) as store:
        assert store.recovered == ()


def test_delete_removes_the_row_and_the_folder_and_the_id_is_not_reused(store: Store) -> None:
    first, second = new_episode(store), new_episode(store)
    for episode in (first, second):
        with StepWriter(store.new_episode_dir(episode), CAMERAS) as writer:
            writer.append(to_record(make_step(0), writer.dtype))
    folder = store.episode_dir(second)
    files = (RECORDS, "steps.json", "episode.json")  # episode.json: the catalogue's rows, for rebuilding
    assert store.episode_size(second) == sum((folder / name).stat().st_size for name in files)
    store.delete_episode(second)
    assert not store.episode_dir(second).exists() and store.episode_dir(first).exists()
    assert [e.id for e in store.catalogue.episodes()] == [first]
    assert store.catalogue.streams(second) == []
    assert new_episode(store) == second + 1


def test_a_second_opener_is_refused_while_the_store_is_held(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        with pytest.raises(StoreLockedError, match=f"in use by process {os.getpid()}"):
            Store(tmp_path)
        with Store(tmp_path, lock=False) as reader:  # reading beside the recorder is fine ...
            assert reader.catalogue.episodes() == []
            with pytest.raises(StoreLockedError, match="lock=False"):  # ... deleting is not
                reader.delete_episode(1)
        new_episode(store)
    with Store(tmp_path) as store:
        assert len(store.catalogue.episodes()) == 1


def test_opening_a_missing_store_without_create_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no episodes recorded here yet"):
        Store(tmp_path / "nowhere", create=False)


def test_the_header_is_json_with_the_numpy_layout(tmp_path: Path) -> None:
    StepWriter(tmp_path, CAMERAS).close()
    header = json.loads((tmp_path / "steps.json").read_text())
    assert header["version"] == 1 and header["cameras"] == list(CAMERAS)
    assert [field[0] for field in header["dtype"]][:3] == ["index", "t", "qpos"]
