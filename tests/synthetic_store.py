"""A small, real episode store for policy tests: written through the recorder as the rig writes one.

States and actions are smooth curves that differ per step, per dimension and per episode (so norm
stats are non-trivial), and each camera's frames have their own colour with a bar that moves with
the step (so a test can tell cameras and steps apart after video encoding).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.store import Store
from rig.step import STATE_DIM, CameraSample, Step

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
# A distinct base colour per camera name (RGB), for telling slots apart; other names get grey.
CAMERA_COLOURS = {
    "cam_high": (200, 40, 40),
    "cam_left_wrist": (40, 200, 40),
    "cam_right_wrist": (40, 40, 200),
}


def synthetic_qpos(episode: int, index: int) -> np.ndarray:
    """The state at a step: per-dimension sinusoids with their own offset, amplitude and rate."""
    dims = np.arange(STATE_DIM)
    return (
        0.1 * dims - 0.5 + (0.2 + 0.05 * dims) * np.sin(0.05 * index * (1 + dims / 7) + dims + episode)
    ).astype(np.float32)


def synthetic_action(episode: int, index: int) -> np.ndarray:
    """The action at a step: where the state goes next, plus a per-dimension offset."""
    return synthetic_qpos(episode, index + 1) + np.linspace(0.0, 0.3, STATE_DIM, dtype=np.float32)


def synthetic_frame(camera: str, index: int, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = CAMERA_COLOURS.get(camera, (128, 128, 128))
    column = (index * 3) % max(1, width - 4)
    image[:, column : column + 4] = 250
    return image


def synthetic_step(episode: int, index: int, cameras: Sequence[str], size: tuple[int, int]) -> Step:
    zeros = np.zeros(STATE_DIM, np.float32)
    samples = {c: CameraSample(synthetic_frame(c, index, size), index * 20.0, index, 0.0) for c in cameras}
    qpos = synthetic_qpos(episode, index)
    return Step(
        index, index * 0.02, qpos, zeros, zeros, synthetic_action(episode, index), None, "teleop", samples
    )


def record_step(recorder: EpisodeRecorder, step: Step, timeout_s: float = 30.0) -> None:
    """Hand `step` to the recorder and wait until it has caught up: a test offers steps far faster
    than the rig's 50 Hz, and the recorder drops what it has no room for rather than block."""
    recorder.on_step(step)
    deadline = time.monotonic() + timeout_s
    while not recorder.caught_up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the recorder did not catch up with step {step.index} within {timeout_s} s")
        time.sleep(0.0005)


def write_synthetic_store(
    root: Path,
    episodes: int = 2,
    steps: int = 60,
    cameras: Sequence[str] = CAMERAS,
    size: tuple[int, int] = (48, 64),
    task: str = "transfer the cube",
) -> Path:
    """Record `episodes` complete episodes of `steps` steps into the store at `root` (created, or
    added to: call it again with other cameras for a store whose episodes differ). (h, w) `size`."""
    height, width = size
    with Store(Path(root)) as store:
        first = len(store.catalogue.episodes())
        session = store.catalogue.start_session(
            profile="synthetic", profile_snapshot="", calibration={}, rig_version="test"
        )
        formats = [CameraFormat(camera, width, height) for camera in cameras]
        recorder = EpisodeRecorder(store, session, formats, 50.0)
        for episode in range(first, first + episodes):
            recorder.begin(task)
            for index in range(steps):
                record_step(recorder, synthetic_step(episode, index, cameras, size))
            summary = recorder.end("success")
            if summary.steps != steps:
                raise RuntimeError(
                    f"synthetic episode kept {summary.steps} of {steps} steps: {summary.describe()}"
                )
    return Path(root)
