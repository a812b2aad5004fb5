"""A store under damage and abuse, through the commands a user runs: a damaged or emptied catalogue
is refused in one line and rebuilt from the episode folders; a killed recorder's episode reads as
interrupted from any command; lost steps and frames are reported, not exported silently; a bad step
stops its episode instead of killing the writer; unknown ids, damaged step headers and a full disk
are one-line errors. Every case checks that nothing recorded was lost on the way."""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import CAMERAS, record_step, synthetic_step, write_synthetic_store
from test_recorder import kill_while_recording

from recorder.episode_file import EPISODE_FILE
from recorder.rebuild import UNKNOWN_TASK
from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.steps import HEADER, RECORDS, read_steps
from recorder.store import CATALOGUE, Store
from rig.cli import main
from rig.step import STATE_DIM

STEPS = 30


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """Two complete episodes, three cameras, recorded through the recorder."""
    return write_synthetic_store(tmp_path / "store", episodes=2, steps=STEPS)


def rig(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def folder_files(root: Path) -> dict[str, bytes]:
    """Every file of the episode folders, to show that nothing there changed."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "episodes").rglob("*"))
        if p.is_file()
    }


# ---- item 5: the catalogue ---------------------------------------------------------------------


def empty(path: Path) -> None:
    path.write_bytes(b"")


def halve(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_page_headers(path: Path) -> None:
    """Garble the b-tree page headers of pages 2..: what a bad sector or a stray write does."""
    data = bytearray(path.read_bytes())
    for page in range(4096, len(data), 4096):
        data[page : page + 12] = bytes(b ^ 0xA5 for b in data[page : page + 12])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [empty, halve, flip_page_headers])
def test_a_damaged_catalogue_is_refused_and_rebuilt_from_the_folders(
    store_dir: Path, capsys: pytest.CaptureFixture[str], damage: object
) -> None:
    code, before, _ = rig(capsys, "episodes", "--store", str(store_dir))
    assert code == 0 and "transfer the cube" in before
    files = folder_files(store_dir)
    assert callable(damage)
    damage(store_dir / CATALOGUE)
    damaged = (store_dir / CATALOGUE).read_bytes()

    for command in (
        ["episodes"],
        ["show", "1"],
        ["record", "--task", "x"],
        ["export", str(store_dir.parent / "x")],
    ):
        code, _, err = rig(capsys, *command, "--store", str(store_dir))
        assert code == 1, command
        one_line_error(err, str(store_dir / CATALOGUE), f"rig rebuild-catalogue --store {store_dir}")
    assert (store_dir / CATALOGUE).read_bytes() == damaged  # refused, not "repaired" into an empty store
    assert folder_files(store_dir) == files

    code, out, _ = rig(capsys, "rebuild-catalogue", "--store", str(store_dir))
    assert code == 0 and "2 episode(s) as the catalogue had them, 0 from their files" in out
    assert [p.read_bytes() for p in store_dir.glob(f"{CATALOGUE}.damaged-*")] == [damaged]
    code, after, _ = rig(capsys, "episodes", "--store", str(store_dir))
    assert code == 0 and after.splitlines()[1:] == before.splitlines()[1:]  # the same table
    with Store(store_dir, create=False, lock=False) as store:
        (first, second) = store.catalogue.episodes()
        assert (first.status, first.outcome, first.steps) == ("complete", "success", STEPS)
        assert [s.camera for s in store.catalogue.streams(second.id)] == list(CAMERAS)
        assert store.catalogue.training_episodes() == [first, second]


def test_a_folder_without_its_copy_of_the_catalogue_is_rebuilt_from_its_files(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(store_dir) as store:
        folder = store.episode_dir(2)
    (folder / EPISODE_FILE).unlink()  # as in a store recorded before the copies existed
    (store_dir / CATALOGUE).unlink()
    code, out, _ = rig(capsys, "rebuild-catalogue", "--store", str(store_dir))
    assert code == 0 and "1 episode(s) as the catalogue had them, 1 from their files alone" in out
    with Store(store_dir, create=False, lock=False) as store:
        rebuilt = store.catalogue.episode(2)
        assert (rebuilt.task, rebuilt.status, rebuilt.steps) == (UNKNOWN_TASK, "interrupted", STEPS)
        assert rebuilt.rate_hz == pytest.approx(50.0)
        streams = store.catalogue.streams(2)
        assert [(s.camera, s.width, s.height, s.frames_written) for s in streams] == [
            (camera, 64, 48, STEPS) for camera in CAMERAS
        ]
        assert [e.id for e in store.catalogue.training_episodes()] == [1]  # training leaves it alone
    assert (folder / EPISODE_FILE).exists()  # written again for the next time


# ---- item 6: a killed recorder, seen by read-only commands ------------------------------------


def test_read_only_commands_show_a_killed_recorders_episode_as_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    kill_while_recording(root, 60)
    on_disk = len(read_steps(root / "episodes" / "000001"))
    assert on_disk > 0
    code, out, _ = rig(capsys, "episodes", "--store", str(root))
    assert code == 0 and "interrupted" in out and "recording" not in out
    assert f" {on_disk} " in out.splitlines()[-2]
    code, out, _ = rig(capsys, "show", "1", "--store", str(root), "--png", str(tmp_path / "p.png"))
    assert code == 0 and f"{on_disk} steps" in out and "interrupted" in out and "warning" not in out
    with Store(root, create=False, lock=False) as store:
        episode = store.catalogue.episode(1)
        (stream,) = store.catalogue.streams(1)
    assert (episode.status, episode.steps) == ("interrupted", on_disk)
    assert stream.frames_written > 0 and episode.frames_dropped == {"cam": stream.frames_dropped}


def test_a_live_recorders_episode_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:  # holds the lock, as a recording process does
        session = store.catalogue.start_session(
            profile="x", profile_snapshot="", calibration={}, rig_version="t"
        )
        recorder = EpisodeRecorder(store, session, [], 50.0)
        recorder.begin("live")
        with Store(root, create=False, lock=False) as reader:
            assert reader.catalogue.episode(1).status == "recording"
        recorder.end()


# ---- item 7: lost steps and frames are told --------------------------------------------------


def test_a_short_step_file_is_reported_by_show_and_export(
    store_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    records = store_dir / "episodes" / "000002" / RECORDS
    os.truncate(records, records.stat().st_size - 7)  # a few bytes short: the last step is partial
    code, out, _ = rig(capsys, "show", "2", "--store", str(store_dir), "--png", str(tmp_path / "p.png"))
    assert code == 0 and f"{STEPS - 1} steps on disk, the catalogue says {STEPS}" in out
    code, out, err = rig(capsys, "export", str(tmp_path / "out"), "--store", str(store_dir))
    assert code == 1 and "1 warning(s) above" in err
    assert f"warning: episode 2: {records} holds {STEPS - 1} whole steps, the catalogue says {STEPS}" in out
    assert f"({2 * STEPS - 1} frames" in out  # what could be exported, was


def test_steps_whose_frames_never_reached_the_video_are_reported(
    store_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    video = store_dir / "episodes" / "000001" / "cam_high.mp4"
    os.truncate(video, video.stat().st_size * 2 // 3)  # the last fragments, as after a kill
    code, out, _ = rig(capsys, "export", str(tmp_path / "out"), "--store", str(store_dir))
    assert code == 1 and "warning: episode 1: camera cam_high's video" in out
    assert "later steps point past its end" in out and "missing frames shown as the previous one" in out


def test_a_missing_video_is_blamed_on_its_own_episode(
    store_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (store_dir / "episodes" / "000002" / "cam_left_wrist.mp4").unlink()
    code, _, err = rig(capsys, "export", str(tmp_path / "out"), "--store", str(store_dir))
    assert code == 1
    one_line_error(err, "episode 2: camera cam_left_wrist's video", "is missing")


# ---- item 8: a step the writer cannot write -------------------------------------------------


def test_a_step_that_cannot_be_written_stops_its_episode_and_says_why(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        session = store.catalogue.start_session(
            profile="x", profile_snapshot="", calibration={}, rig_version="t"
        )
        recorder = EpisodeRecorder(store, session, [CameraFormat("cam_high", 64, 48)], 50.0)
        recorder.begin("transfer the cube")
        for index in range(20):
            step = synthetic_step(0, index, ["cam_high"], (48, 64))
            if index == 12:
                step = dataclasses.replace(step, qpos=np.zeros(STATE_DIM - 1))  # a malformed step
            record_step(recorder, step)
        summary = recorder.end("success")
        assert summary.status == "interrupted" and summary.steps == 12
        assert summary.error is not None and "step 12" in summary.error and "ValueError" in summary.error
        episode = store.catalogue.episode(summary.episode_id)
        assert (episode.status, episode.steps) == ("interrupted", 12) and "step 12" in episode.notes
        assert len(read_steps(store.episode_dir(summary.episode_id))) == 12
        recorder.begin("transfer the cube")  # the next episode records as usual
        recorder.on_step(synthetic_step(0, 0, ["cam_high"], (48, 64)))
        assert recorder.end().status == "complete"


# ---- item 9: one-line errors ----------------------------------------------------------------


def test_unknown_ids_and_a_damaged_step_header_are_one_line_errors(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["show", "99"], ["delete", "99", "--yes"], ["mark", "99", "--outcome", "failure"]):
        code, _, err = rig(capsys, *command, "--store", str(store_dir))
        assert code == 1
        one_line_error(err, f"no episode 99; `rig episodes --store {store_dir}` lists them")
    header = store_dir / "episodes" / "000001" / HEADER
    header.write_text("{not json")
    code, _, err = rig(capsys, "show", "1", "--store", str(store_dir))
    assert code == 1
    one_line_error(err, f"{header} is damaged", "rig delete")


def test_record_on_a_full_disk_is_a_one_line_error(store_dir: Path) -> None:
    files = folder_files(store_dir)

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # no file may grow: a disk that is full

    command = [sys.executable, "-m", "rig.cli", "record", "--store", str(store_dir), "--task", "x",
               "--episodes", "1", "--countdown", "0", "--reset-time", "0", "--episode-time", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=full_disk)
    assert result.returncode == 1
    one_line_error(result.stderr, "the disk is full", "Free space")
    assert folder_files(store_dir) == files
    shutil.rmtree(store_dir.parent / "x", ignore_errors=True)
