"""Video files: round trip, random access, keyframes, a killed writer, a full disk, dropped frames."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recorder.bench import bench_record
from recorder.video import CameraEncoder, VideoReader, VideoSettings, VideoWriter

ROOT = Path(__file__).resolve().parents[1]
H, W, FPS = 120, 160, 50
BITS = 8


def indexed_frame(i: int, height: int = H, width: int = W) -> np.ndarray:
    """A smooth, moving picture with `i` painted on its top row as eight black/white 16x16 blocks."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 200 // width, y * 200 // height, np.full_like(x, 90)], axis=-1)
    left = (3 * i) % (width - 20)
    image[60:80, left : left + 20] = (220, 60, 40)
    for bit in range(BITS):
        image[:16, 16 * bit : 16 * bit + 16] = 255 if (i >> bit) & 1 else 0
    return image.astype(np.uint8)


def index_of(image: np.ndarray) -> int:
    """The number painted by `indexed_frame`, read back from the centre of each block."""
    return sum(1 << bit for bit in range(BITS) if image[4:12, 16 * bit + 4 : 16 * bit + 12].mean() > 128)


def write_video(path: Path, count: int, settings: VideoSettings | None = None) -> list[np.ndarray]:
    frames = [indexed_frame(i) for i in range(count)]
    with VideoWriter(path, W, H, FPS, settings) as writer:
        for frame in frames:
            writer.write(frame)
        assert writer.frames_written == count
    return frames


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    frames = write_video(path, 40)
    with VideoReader(path) as reader:
        assert (len(reader), reader.width, reader.height, reader.fps) == (40, W, H, FPS)
        decoded = list(reader)
    assert len(decoded) == 40
    for i, (original, image) in enumerate(zip(frames, decoded, strict=True)):
        assert index_of(image) == i
        assert np.abs(image.astype(int) - original).mean() < 3.0


def test_random_access_equals_sequential_decoding(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    write_video(path, 45)
    with VideoReader(path) as reader:
        sequential = list(reader)
        order = list(range(45)) * 2
        random.Random(0).shuffle(order)
        for i in order:
            assert np.array_equal(reader.frame(i), sequential[i]), i
        picked = [44, 3, 17, 3, 0, 30]
        assert np.array_equal(reader.frames(picked), np.stack([sequential[i] for i in picked]))
        with pytest.raises(IndexError):
            reader.frame(45)


def test_keyframes_fall_every_gop_frames(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    write_video(path, 30, VideoSettings(gop=7))
    with VideoReader(path) as reader:
        assert reader.keyframes == (0, 7, 14, 21, 28)


def test_fragments_reach_the_file_while_writing(tmp_path: Path) -> None:
    """A reader sees every fragment the writer has finished, with the writer still open."""
    path = tmp_path / "a.mp4"
    writer = VideoWriter(path, W, H, FPS, VideoSettings(gop=10))
    for i in range(25):
        writer.write(indexed_frame(i))
    with VideoReader(path) as reader:
        assert len(reader) == 20  # frames 20.. wait for the keyframe of frame 30
        assert index_of(reader.frame(19)) == 19
    writer.close()
    writer.close()  # idempotent
    with VideoReader(path) as reader:
        assert len(reader) == 25


def test_a_file_cut_anywhere_reads_a_correct_prefix(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    write_video(path, 40)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    for size in range(2000, len(data), len(data) // 23):
        cut.write_bytes(data[:size])
        with VideoReader(cut) as reader:
            assert [index_of(image) for image in reader] == list(range(len(reader)))


CHILD_WRITER = """
import sys
from recorder.video import VideoWriter
from tests.test_video import indexed_frame, H, W, FPS
writer = VideoWriter(sys.argv[1], W, H, FPS)
i = 0
while True:
    writer.write(indexed_frame(i % 256))
    i += 1
    print(i, flush=True)
"""


def test_a_killed_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    written = 0
    try:
        while written < 95:
            written = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with VideoReader(path) as reader:
        # At most the frames after the last keyframe are lost (the contract allows a second's worth).
        assert written - VideoSettings().gop <= len(reader)
        assert [index_of(image) for image in reader] == list(range(len(reader)))


CHILD_FULL_DISK = """
import json, resource, signal, sys
from recorder.video import CameraEncoder, VideoWriter
from tests.test_video import indexed_frame, H, W, FPS
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
result = {}
writer = VideoWriter(sys.argv[1], W, H, FPS)
try:
    for i in range(200):
        writer.write(indexed_frame(i))
except OSError as error:
    result["writer"] = [type(error).__name__, error.errno, writer.frames_written]
writer.close()
encoder = CameraEncoder(sys.argv[2], W, H, FPS, queue_frames=200)
for i in range(200):
    encoder.offer(indexed_frame(i))
encoder.close()
error = encoder.error
result["encoder"] = [type(error).__name__, getattr(error, "errno", None), encoder.written, encoder.dropped]
print(json.dumps(result))
"""


def test_a_full_disk_raises_the_oserror_and_keeps_the_file_readable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    out = subprocess.run(
        [sys.executable, "-c", CHILD_FULL_DISK, str(a), str(b)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout)
    kind, code, written = result["writer"]
    assert (kind, code) == ("OSError", errno.EFBIG)
    with VideoReader(a) as reader:
        assert len(reader) == written > 0
        assert [index_of(image) for image in reader] == list(range(written))
    kind, code, written, dropped = result["encoder"]
    assert (kind, code) == ("OSError", errno.EFBIG)
    assert written + dropped == 200
    with VideoReader(b) as reader:
        assert len(reader) == written


def test_camera_encoder_counts_drops_and_never_blocks(tmp_path: Path) -> None:
    image = indexed_frame(1, 480, 640)
    encoder = CameraEncoder(tmp_path / "a.mp4", 640, 480, FPS, queue_frames=2)
    accepted, slowest = 0, 0.0
    for _ in range(60):  # a burst: offering takes microseconds, encoding a frame milliseconds
        start = time.perf_counter()
        accepted += encoder.offer(image)
        slowest = max(slowest, time.perf_counter() - start)
    encoder.close(timeout=10)
    assert encoder.error is None
    assert encoder.dropped > 0
    assert (encoder.written, encoder.written + encoder.dropped) == (accepted, 60)
    assert slowest < 0.1
    with VideoReader(tmp_path / "a.mp4") as reader:
        assert len(reader) == accepted


def test_a_wrong_image_is_a_clear_error(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "a.mp4", W, H, FPS) as writer:
        for bad in (np.zeros((W, H, 3), np.uint8), np.zeros((H, W, 4), np.uint8), np.zeros((H, W, 3))):
            with pytest.raises(ValueError, match=r"expected a \(120, 160, 3\) uint8 RGB image"):
                writer.write(bad)
        assert writer.frames_written == 0
    encoder = CameraEncoder(tmp_path / "b.mp4", W, H, FPS)
    with pytest.raises(ValueError, match="uint8 RGB image"):
        encoder.offer(np.zeros((H, W), np.uint8))
    encoder.close()
    assert encoder.dropped == 0


def test_bench_record_keeps_up(tmp_path: Path) -> None:
    report = bench_record(cameras=1, width=160, height=120, fps=50, seconds=2.0, directory=tmp_path)
    assert "offered 100  written 100  dropped 0" in report, report
    assert "ERROR" not in report
    assert not os.listdir(tmp_path)  # the bench cleans up
