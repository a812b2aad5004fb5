"""`rig record` and the store commands, as a user runs them on the twin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recorder.steps import read_steps

SMALL_TWIN = """
base = "aloha-sim"
[cameras.cam_high]
width = 128
height = 96
[cameras.cam_left_wrist]
enabled = false
[cameras.cam_right_wrist]
enabled = false
"""


def rig(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rig.cli", *args], capture_output=True, text=True, timeout=300, input=stdin
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with two short episodes recorded through the real loop on the twin."""
    folder = tmp_path_factory.mktemp("record")
    profile = folder / "small-twin.toml"
    profile.write_text(SMALL_TWIN)
    store = folder / "store"
    result = rig(
        "record",
        "--profile",
        str(profile),
        "--store",
        str(store),
        "--task",
        "lift the cube",
        "--episodes",
        "2",
        "--episode-time",
        "1.5",
        "--reset-time",
        "0.5",
        "--countdown",
        "0.5",
    )
    assert result.returncode == 0, result.stderr
    assert "episode 2:" in result.stdout and "frames dropped 0" in result.stdout
    assert "recorded 2 episode(s)" in result.stdout and "flagged" not in result.stdout
    return store


def test_episodes_lists_what_was_recorded(recorded: Path) -> None:
    result = rig("episodes", "--store", str(recorded))
    assert result.returncode == 0
    assert "lift the cube" in result.stdout and "complete" in result.stdout and "cam_high" in result.stdout


def test_show_summarises_and_plots(recorded: Path, tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    result = rig("show", "1", "--store", str(recorded), "--png", str(png))
    assert result.returncode == 0, result.stderr
    assert "cam_high: 128x96 @ 50 fps" in result.stdout and "0 dropped" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_drives_the_followers_through_the_actions(recorded: Path) -> None:
    result = rig("replay", "1", "--store", str(recorded), "--profile", "aloha-sim")
    assert result.returncode == 0, result.stderr
    assert "replayed episode 1" in result.stdout


def test_export_then_import_round_trips(recorded: Path, tmp_path: Path) -> None:
    exported = rig("export", str(tmp_path / "dataset"), "--store", str(recorded))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "dataset" / "meta" / "info.json").exists()
    imported = rig("import", str(tmp_path / "dataset"), "--store", str(tmp_path / "other"))
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 episodes" in imported.stdout


def test_mark_sets_outcome_and_notes(recorded: Path) -> None:
    result = rig("mark", "1", "--store", str(recorded), "--outcome", "failure", "--note", "cube slipped")
    assert result.returncode == 0, result.stderr
    shown = rig("show", "1", "--store", str(recorded), "--png", str(recorded.parent / "p.png")).stdout
    assert "outcome failure" in shown and "cube slipped" in shown


def test_delete_asks_first(recorded: Path) -> None:
    kept = rig("delete", "2", "--store", str(recorded), stdin="n\n")
    assert kept.returncode == 1 and "kept" in kept.stdout
    deleted = rig("delete", "2", "--store", str(recorded), "--yes")
    assert deleted.returncode == 0
    assert "lift the cube" in rig("episodes", "--store", str(recorded)).stdout


def test_record_refuses_to_start_without_the_disk_it_needs(tmp_path: Path) -> None:
    result = rig("record", "--store", str(tmp_path / "s"), "--task", "x", "--episodes", "100000000")
    assert result.returncode == 1
    assert "free" in result.stderr and "Traceback" not in result.stderr


def test_successful_only_is_for_the_twin_whose_reward_judges_episodes(tmp_path: Path) -> None:
    result = rig(
        "record", "--profile", "aloha", "--store", str(tmp_path / "s"), "--task", "x", "--successful-only"
    )
    assert result.returncode == 1 and "needs the twin" in result.stderr


def test_record_keeps_only_the_cameras_asked_for(tmp_path: Path) -> None:
    """`--cameras` records a subset of the profile's cameras, `--camera-hz` at a lower rate (rig demo
    records only what π0 sees, as often as evaluation renders it)."""
    profile = tmp_path / "two-cameras.toml"
    profile.write_text(SMALL_TWIN.replace("[cameras.cam_left_wrist]\nenabled = false\n", ""))
    store = tmp_path / "store"
    common = ("record", "--profile", str(profile), "--store", str(store), "--task", "look")
    short = ("--episode-time", "0.5", "--reset-time", "0.2", "--countdown", "0")
    result = rig(*common, *short, "--cameras", "cam_high", "--camera-hz", "10")
    assert result.returncode == 0, result.stderr
    assert "frames dropped 0" in result.stdout
    episode = store / "episodes" / "000001"
    assert sorted(p.name for p in episode.glob("*.mp4")) == ["cam_high.mp4"]
    rendered = np.unique(read_steps(episode)["cam_high/frame_number"])  # the frames the ticks saw
    assert 4 <= len(rendered) <= 7  # 0.5 s at 10 Hz, not 25 frames at the profile's 50

    unknown = rig(*common, *short, "--cameras", "cam_high,cam_nope")
    assert unknown.returncode == 2  # a profile error, as for any wrong setting
    assert "has no camera cam_nope; it has cam_high, cam_left_wrist" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
