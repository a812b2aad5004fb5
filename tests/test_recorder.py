"""Recording episodes: from the live loop on the twin, through crashes and a full disk."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import record_step

from hardware.devices import open_devices
from hardware.profile import load_profile
from recorder.reader import WindowReader
from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.steps import read_steps
from recorder.store import Store
from recorder.video import VideoReader
from rig.calibration import default_calibrations
from rig.loop import ControlLoop, LoopConfig
from rig.step import STATE_DIM, CameraSample, Step

HEIGHT, WIDTH = 96, 128


def painted(index: int) -> np.ndarray:
    """A frame that says which step it is: a bright bar whose position encodes the index."""
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    column = (index * 7) % (WIDTH - 8)
    image[:, column : column + 8] = 220
    return image


def bar_position(image: np.ndarray) -> int:
    return int(np.argmax(image[:, :, 0].mean(axis=0) > 130))


def synthetic_step(index: int, cameras: tuple[str, ...] = ("cam",)) -> Step:
    vector = np.full(STATE_DIM, index / 100, np.float64)
    samples = {name: CameraSample(painted(index), index * 20.0, index, 0.0) for name in cameras}
    return Step(index, index * 0.02, vector, vector, vector, vector + 0.5, None, "teleop", samples)


def test_an_episode_from_the_live_loop_on_the_twin(tmp_path: Path) -> None:
    base = load_profile("aloha-sim")
    camera = dataclasses.replace(base.cameras["cam_high"], width=WIDTH, height=HEIGHT)
    profile = dataclasses.replace(base, cameras={"cam_high": camera})
    store = Store(tmp_path / "store")
    session = store.catalogue.start_session(
        profile=profile.name, profile_snapshot="", calibration={}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam_high", WIDTH, HEIGHT)], profile.rate_hz)
    seen: dict[int, np.ndarray] = {}
    with open_devices(profile) as devices:
        calibrations = default_calibrations(profile)
        loop = ControlLoop(devices, calibrations, LoopConfig())
        loop.subscribe(recorder.on_step)
        loop.start()
        first = loop.wait_for_step(2)
        episode_id = recorder.begin("hold still")
        loop.subscribe(lambda step: seen.setdefault(step.index, step.cameras["cam_high"].image))
        step = first
        while step.index < first.index + 60:
            step = loop.wait_for_step(step.index)
        summary = recorder.end("success")
        loop.stop(park=False)
    assert summary.status == "complete" and summary.outcome == "success"
    assert summary.frames_dropped == {"cam_high": 0} and summary.steps_dropped == 0
    record = store.catalogue.episode(episode_id)
    steps = read_steps(store.episode_dir(episode_id))
    assert record.steps == len(steps) == summary.steps >= 55
    assert np.allclose(np.diff(steps["t"]), 0.02)
    video = VideoReader(store.episode_dir(episode_id) / "cam_high.mp4")
    assert len(video) == len(steps)
    for i in (0, len(steps) // 2, len(steps) - 1):
        original = seen.get(int(steps["index"][i]))
        if original is not None:
            assert np.abs(video.frame(i).astype(int) - original.astype(int)).mean() < 6


def test_discard_removes_the_episode(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = store.catalogue.start_session(
        profile="x", profile_snapshot="", calibration={}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam", WIDTH, HEIGHT)], 50.0)
    episode_id = recorder.begin("a mistake")
    for i in range(5):
        recorder.on_step(synthetic_step(i))
    recorder.discard()
    assert not store.episode_dir(episode_id).exists()
    with pytest.raises(KeyError):
        store.catalogue.episode(episode_id)


def test_steps_that_find_the_queue_full_are_counted_not_hidden(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = store.catalogue.start_session(
        profile="x", profile_snapshot="", calibration={}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam", WIDTH, HEIGHT)], 50.0, queue_steps=2)
    recorder.begin("burst")
    started = time.perf_counter()
    for i in range(400):
        recorder.on_step(synthetic_step(i))  # far faster than 50 Hz: the queue overflows
    assert time.perf_counter() - started < 0.5  # the caller (the loop) never waited
    summary = recorder.end()
    assert summary.steps_dropped > 0
    assert summary.steps + summary.steps_dropped == 400
    steps = read_steps(store.episode_dir(summary.episode_id))
    assert len(steps) == summary.steps
    video = VideoReader(store.episode_dir(summary.episode_id) / "cam.mp4")
    written = steps["cam/video_index"]
    assert len(video) == summary.frames_written["cam"] == int((written >= 0).sum())


def test_windows_for_training_come_from_the_recorded_steps_and_frames(tmp_path: Path) -> None:
    store = Store(tmp_path)
    session = store.catalogue.start_session(
        profile="x", profile_snapshot="", calibration={}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam", WIDTH, HEIGHT)], 50.0)
    recorder.begin("windows")
    for i in range(80):
        record_step(recorder, synthetic_step(i))
    recorder.end()
    reader = WindowReader(tmp_path, horizon=50)
    assert len(reader) == 80
    window = reader[70]
    assert window.state[0] == pytest.approx(0.70)
    assert window.actions.shape == (50, STATE_DIM) and window.action_is_pad.sum() == 40
    assert window.actions[0, 0] == pytest.approx(1.20) and window.actions[-1, 0] == pytest.approx(1.29)
    assert abs(bar_position(window.images["cam"]) - (70 * 7) % (WIDTH - 8)) <= 1
    reader.close()


# A child process that opens a store and begins an episode of synthetic steps; the tests append
# what it does next (record until killed, record into a full disk).
CHILD_BEGINS = textwrap.dedent(
    """
    import resource, sys, time
    sys.path.insert(0, {tests!r})
    from test_recorder import synthetic_step, HEIGHT, WIDTH
    from synthetic_store import record_step
    from recorder.store import Store
    from recorder.recorder import CameraFormat, EpisodeRecorder
    store = Store({root!r})
    session = store.catalogue.start_session(
        profile="x", profile_snapshot="", calibration={{}}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam", WIDTH, HEIGHT)], 50.0)
    recorder.begin("child")
    """
)

CHILD = CHILD_BEGINS + textwrap.dedent(
    """
    start = time.monotonic()
    for i in range(100000):
        time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        recorder.on_step(synthetic_step(i))
        print(i, flush=True)
    """
)


def kill_while_recording(root: Path, steps: int) -> int:
    """Record into `root` from a child process and kill -9 it once it has offered `steps` steps;
    the last step it offered."""
    script = CHILD.format(tests=os.path.dirname(__file__), root=str(root))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    offered = -1
    for line in child.stdout:
        offered = int(line)
        if offered >= steps:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    return offered


def test_a_sigkill_mid_episode_loses_at_most_a_second(tmp_path: Path) -> None:
    root = tmp_path / "store"
    offered = kill_while_recording(root, 150)  # three seconds of steps and frames
    store = Store(root)
    assert store.recovered, "the interrupted episode was not found"
    episode_id = store.recovered[0]
    assert store.catalogue.episode(episode_id).status == "interrupted"
    steps = read_steps(store.episode_dir(episode_id))
    assert offered - 50 <= len(steps) <= offered + 1
    assert np.array_equal(steps["index"], np.arange(len(steps)))
    video = VideoReader(store.episode_dir(episode_id) / "cam.mp4")
    assert len(video) >= offered - 50
    for i in (0, len(video) // 2, len(video) - 1):
        assert abs(bar_position(video.frame(i)) - (i * 7) % (WIDTH - 8)) <= 1


FULL_DISK_CHILD = CHILD_BEGINS + textwrap.dedent(
    """
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))  # files may not grow past 60 kB: a full disk
    for i in range(3000):
        record_step(recorder, synthetic_step(i))
        if not recorder.recording:
            break
    summary = recorder.end()
    print(summary.status, summary.steps, recorder.error is not None, flush=True)
    print(recorder.error, flush=True)
    """
)


def test_a_full_disk_stops_the_episode_cleanly_and_keeps_what_was_written(tmp_path: Path) -> None:
    root = tmp_path / "store"
    script = FULL_DISK_CHILD.format(tests=os.path.dirname(__file__), root=str(root))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stderr
    first, message = result.stdout.splitlines()[:2]
    status, steps, stopped = first.split()
    assert status == "interrupted" and stopped == "True"
    assert "disk is full" in message and "rig delete" in message
    store = Store(root)  # when the catalogue could not be updated either, reopening recovers the episode
    episode = store.catalogue.episodes()[0]
    assert episode.status == "interrupted"
    kept = read_steps(store.episode_dir(episode.id))
    assert len(kept) == int(steps) > 0
    video = VideoReader(store.episode_dir(episode.id) / "cam.mp4")
    assert len(video) > 0
    video.frame(len(video) - 1)  # the last whole fragment decodes
