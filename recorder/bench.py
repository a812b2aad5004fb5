"""`rig bench record`: can this machine encode every camera at the loop's rate, and at what cost?

Two runs on synthetic rendered-like frames (smooth gradients, flat-shaded moving shapes: what the
twin's cameras see, encoded about as compactly as the MuJoCo frames; never random noise, which no
encoder can compress and no camera produces):

- paced: N `CameraEncoder`s fed one frame each per tick on an absolute 50 Hz schedule of the wall
  clock, plus that tick's step record into a `StepWriter`, as the recorder's writer thread does.
  Drops, bytes on disk and the process's CPU use come from this run.
- burst: the same encoders given a few seconds of frames at once and timed while they drain: the
  encode capacity in frames/s, and the headroom over what the cameras need.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from recorder.steps import StepWriter, step_dtype, to_record
from recorder.video import CameraEncoder, VideoSettings
from rig.step import STATE_DIM, CameraSample, Step

# Distinct frames per camera: the motion loops after this many, which no encoder setting here can
# notice (they reference one previous frame at most) and which keeps the frames in memory small.
LOOP_FRAMES = 50


def rendered_like_frames(count: int, height: int, width: int, phase: float = 0.0) -> np.ndarray:
    """(count, height, width, 3) uint8 frames of a lit table with two swinging two-link arms and a cube
    circling on it; the motion is periodic in `count`, so the frames loop without a jump."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= height
    x /= width
    background = np.stack([20 + 30 * y, 22 + 34 * y, 30 + 40 * y], axis=-1)
    table = (y > 0.4) & (np.abs(x - 0.5) < 0.25 + 0.3 * (y - 0.4))
    scene = np.where(table[..., None], (70 + 30 * y - 20 * np.abs(x - 0.5))[..., None], background)
    frames = np.empty((count, height, width, 3), np.uint8)
    for k in range(count):
        angle = 2 * math.pi * k / count + phase
        image = scene.copy()
        for side in (-1.0, 1.0):
            base = (0.5 + 0.38 * side, 0.75)
            elbow = (0.5 + 0.3 * side + 0.05 * math.cos(angle), 0.35 + 0.08 * math.sin(angle + side))
            tip = (0.5 + 0.1 * side + 0.1 * math.sin(angle), 0.5 + 0.12 * math.cos(angle + side))
            _arm(image, x, y, base, elbow, width=0.04)
            _arm(image, x, y, elbow, tip, width=0.025)
        cube_x, cube_y = 0.5 + 0.15 * math.cos(angle), 0.62 + 0.1 * math.sin(angle)
        cube = (np.abs(x - cube_x) < 0.025) & (np.abs(y - cube_y) < 0.03)
        image[cube] = np.stack(
            [np.full(cube.sum(), 200.0), 30 + 120 * y[cube] - 40, np.full(cube.sum(), 30.0)], -1
        )
        frames[k] = np.clip(image, 0, 255)
    return frames


Point = tuple[float, float]


def _arm(image: np.ndarray, x: np.ndarray, y: np.ndarray, base: Point, tip: Point, width: float) -> None:
    """Paint a grey segment from base to tip, shaded along its length."""
    dx, dy = tip[0] - base[0], tip[1] - base[1]
    along = np.clip(((x - base[0]) * dx + (y - base[1]) * dy) / (dx * dx + dy * dy), 0, 1)
    distance = np.hypot(x - base[0] - along * dx, y - base[1] - along * dy)
    mask = distance < width
    image[mask] = (150 + 60 * along[mask])[:, None]


@dataclass(frozen=True)
class PacedRun:
    offered: tuple[int, ...]
    written: tuple[int, ...]
    dropped: tuple[int, ...]
    max_backlog: tuple[int, ...]
    steps_written: int
    late_ticks: int  # ticks that started a whole period or more after their deadline
    wall_s: float
    cpu_s: float
    video_bytes: int
    steps_bytes: int
    errors: tuple[str, ...]


def paced_run(
    frames: np.ndarray, cameras: int, fps: float, seconds: float, settings: VideoSettings, folder: Path
) -> PacedRun:
    """Feed every encoder one frame per tick, and a step record per tick to a StepWriter, on an
    absolute schedule (deadline k = start + k / fps), as a recording does."""
    _, height, width, _ = frames.shape
    names = [f"cam{c}" for c in range(cameras)]
    encoders = [CameraEncoder(folder / f"{n}.mp4", width, height, fps, settings) for n in names]
    steps = StepWriter(folder, names)
    dtype = step_dtype(names)
    ticks = round(seconds * fps)
    offered = [0] * cameras
    backlog = [0] * cameras
    late = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    try:
        for k in range(ticks):
            delay = start + k / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif -delay >= 1 / fps:
                late += 1
            images = [frames[(k + 17 * c) % len(frames)] for c in range(cameras)]
            steps.append(to_record(_step(k, k / fps, names, images), dtype))
            for c, encoder in enumerate(encoders):
                encoder.offer(images[c])
                offered[c] += 1
                backlog[c] = max(backlog[c], encoder.backlog)
    finally:
        steps.close()
        for encoder in encoders:
            encoder.close()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return PacedRun(
        offered=tuple(offered),
        written=tuple(e.written for e in encoders),
        dropped=tuple(e.dropped for e in encoders),
        max_backlog=tuple(backlog),
        steps_written=steps.steps_written,
        late_ticks=late,
        wall_s=wall,
        cpu_s=cpu,
        video_bytes=sum(os.path.getsize(e.path) for e in encoders),
        steps_bytes=os.path.getsize(steps.path),
        errors=tuple(f"{e.path.name}: {e.error!r}" for e in encoders if e.error is not None),
    )


def _step(index: int, t: float, names: list[str], images: list[np.ndarray]) -> Step:
    zeros = np.zeros(STATE_DIM, np.float32)
    cameras = {n: CameraSample(image, t * 1e3, index, 0.005) for n, image in zip(names, images, strict=True)}
    return Step(index, t, zeros, zeros, zeros, zeros, zeros, "teleop", MappingProxyType(cameras))


def encode_capacity(
    frames: np.ndarray, cameras: int, fps: float, settings: VideoSettings, folder: Path
) -> float:
    """Frames/s that `cameras` encoders manage together when nothing paces them: each is given the
    frames twice over at once (queued by reference, so nothing is copied), timed to the end of its
    file."""
    _, height, width, _ = frames.shape
    burst = 2 * len(frames)
    encoders = [
        CameraEncoder(folder / f"burst{c}.mp4", width, height, fps, settings, queue_frames=burst)
        for c in range(cameras)
    ]
    start = time.perf_counter()
    for k in range(burst):
        for c, encoder in enumerate(encoders):
            encoder.offer(frames[(k + 17 * c) % len(frames)])
    for encoder in encoders:
        encoder.close()
    elapsed = time.perf_counter() - start
    return sum(e.written for e in encoders) / elapsed


def bench_record(
    cameras: int = 3,
    width: int = 640,
    height: int = 480,
    fps: float = 50,
    seconds: float = 10.0,
    settings: VideoSettings | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> str:
    """Record `seconds` of synthetic frames from `cameras` cameras at `fps` on the wall clock, then
    measure the encoders' unpaced capacity; the report `rig bench record` prints. Files go to a
    temporary folder (inside `directory`, to bench that disk) and are removed."""
    settings = settings or VideoSettings()
    frames = rendered_like_frames(LOOP_FRAMES, height, width)
    with tempfile.TemporaryDirectory(prefix="rig-bench-record-", dir=directory) as folder:
        paced_dir = Path(folder) / "paced"
        paced_dir.mkdir()
        run = paced_run(frames, cameras, fps, seconds, settings, paced_dir)
        capacity = encode_capacity(frames, cameras, fps, settings, Path(folder))
    return _report(run, capacity, cameras, width, height, fps, settings)


def _report(
    run: PacedRun, capacity: float, cameras: int, width: int, height: int, fps: float, settings: VideoSettings
) -> str:
    needed = cameras * fps
    tune = f" tune={settings.tune}" if settings.tune else ""
    lines = [
        f"record bench: {cameras} camera(s) x {width}x{height} at {fps:g} fps for {run.wall_s:.1f} s, "
        f"{settings.codec} {settings.preset}{tune} crf {settings.crf} gop {settings.gop}, "
        f"{settings.threads} thread(s) per camera",
    ]
    for c in range(cameras):
        lines.append(
            f"  cam{c}: offered {run.offered[c]}  written {run.written[c]}  dropped {run.dropped[c]}  "
            f"(largest backlog {run.max_backlog[c]} frames)"
        )
    lines += [
        f"  steps: {run.steps_written} written, {run.late_ticks} ticks started a period or more late",
        f"  encode capacity {capacity:.0f} frames/s for {needed:g} needed: headroom {capacity / needed:.2f}x",
        f"  disk {(run.video_bytes + run.steps_bytes) / run.wall_s / 1e6:.2f} MB/s "
        f"(video {run.video_bytes / max(1, sum(run.written)):.0f} bytes/frame, "
        f"steps {run.steps_bytes / run.wall_s / 1e3:.1f} kB/s)",
        f"  CPU {run.cpu_s / run.wall_s:.2f} cores of {os.cpu_count()} while recording",
    ]
    lines += [f"  ERROR {error}" for error in run.errors]
    return "\n".join(lines)


def bench_reader(root: Path, windows: int = 200, horizon: int = 50, seed: int = 0) -> str:
    """What `rig bench reader` prints: random training windows per second from a store, as a data
    loader worker would draw them (each window: state, `horizon` actions, one frame per camera)."""
    from recorder.reader import WindowReader

    reader = WindowReader(root, horizon=horizon)
    order = np.random.default_rng(seed).integers(0, len(reader), size=windows)
    reader[int(order[0])]  # open the first episode's files outside the timing
    started = time.perf_counter()
    for item in order:
        reader[int(item)]
    elapsed = time.perf_counter() - started
    cameras = len(reader.episode(reader.episode_ids[0]).cameras)
    reader.close()
    return (
        f"reader bench: {windows} random windows of {horizon} actions and {cameras} camera frame(s) from "
        f"{len(reader.episode_ids)} episode(s), {len(reader)} steps: {windows / elapsed:.1f} windows/s "
        f"({1000 * elapsed / windows:.1f} ms each) in one process"
    )
