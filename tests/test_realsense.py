"""The RealSense camera path, end to end through librealsense's software devices (no mocks)."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyrealsense2 as rs
import pytest

from hardware.realsense import (
    CameraDirectory,
    CameraError,
    CameraFrame,
    CameraNotFoundError,
    CameraSpec,
    CameraStreamError,
    RealSenseCamera,
)
from hardware.sim.cameras import HORIZONTAL_FOV_DEG, SimulatedCamera, add_stream

H, W, FPS = 48, 64, 30
_serials = (f"9000000{n:05d}" for n in itertools.count())


def counter_image(n: int, shape: tuple[int, ...] = (H, W, 3)) -> np.ndarray:
    """An image unlike any other: the counter in the first pixel, and a gradient that depends on it."""
    rows, cols = np.indices(shape[:2])
    image = np.empty(shape, np.uint8)
    image[..., 0] = (rows + n) % 256
    image[..., 1] = (cols * 3 + n) % 256
    image[..., 2] = n % 256
    return image


class Renderer:
    """Renders numbered images and remembers them, so a test can compare what it reads."""

    def __init__(self, make: Callable[[int], np.ndarray]) -> None:
        self.make = make
        self.images: list[np.ndarray] = []

    def __call__(self) -> np.ndarray:
        self.images.append(self.make(len(self.images)))
        return self.images[-1]


def depth_image(n: int) -> np.ndarray:
    return (np.arange(H * W, dtype=np.uint16).reshape(H, W) + 1000 * n).astype(np.uint16)


@pytest.fixture
def sim() -> Iterator[tuple[SimulatedCamera, Renderer]]:
    renderer = Renderer(counter_image)
    camera = SimulatedCamera("top", next(_serials), W, H, FPS, renderer)
    yield camera, renderer
    camera.close()


def open_camera(device: rs.device, stall_timeout: float = 1.0, **spec: Any) -> RealSenseCamera:
    """Starts a camera on a software device, in the test's mode unless `spec` says otherwise."""
    spec = {"width": W, "height": H, "fps": FPS, **spec}
    serial = device.get_info(rs.camera_info.serial_number)
    directory = CameraDirectory(software_devices=[device])
    camera = RealSenseCamera(CameraSpec("top", serial, **spec), directory, stall_timeout)
    camera.start()
    return camera


def test_frames_are_the_rendered_images_with_the_sim_times(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, renderer = sim
    frames: list[CameraFrame] = []
    with open_camera(twin.device) as camera:
        assert camera.latest() is None
        for k in range(20):  # more than librealsense's frame pool, so kept frames must be copies
            twin.publish(k * twin.period)
            frames.append(camera.wait_for_frame(after=k - 1))
        assert camera.frames_received == 20
    assert twin.frames_published == 20
    assert [f.frame_number for f in frames] == list(range(20))
    assert [f.timestamp_ms for f in frames] == [k * twin.period * 1000.0 for k in range(20)]
    for frame, image in zip(frames, renderer.images, strict=True):
        assert frame.color.dtype == np.uint8 and frame.depth is None
        np.testing.assert_array_equal(frame.color, image)
    received = [f.received for f in frames]
    assert received == sorted(received)


def test_free_running_stream_keeps_the_latest_frame(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, renderer = sim
    with open_camera(twin.device) as camera:

        def publish_200() -> None:
            for k in range(200):
                twin.publish(k / 1000)

        publisher = threading.Thread(target=publish_200)
        publisher.start()
        seen = []
        while publisher.is_alive():
            if (frame := camera.latest()) is not None:
                seen.append(frame.frame_number)
        publisher.join()
        last = camera.wait_for_frame(after=198)
    assert seen == sorted(seen)
    assert last.frame_number == 199
    np.testing.assert_array_equal(last.color, renderer.images[199])


def test_depth_is_paired_with_its_color_image() -> None:
    color, depth = Renderer(counter_image), Renderer(depth_image)
    twin = SimulatedCamera("wrist", next(_serials), W, H, FPS, color, depth)
    with open_camera(twin.device, depth=True) as camera:
        frames = []
        for k in range(5):
            twin.publish(k * twin.period)
            frames.append(camera.wait_for_frame(after=k - 1))
        assert camera.depth_scale == pytest.approx(0.001)
    for frame, image, z in zip(frames, color.images, depth.images, strict=True):
        assert frame.depth is not None and frame.depth.dtype == np.uint16
        np.testing.assert_array_equal(frame.color, image)
        np.testing.assert_array_equal(frame.depth, z)


def test_depth_in_metres_becomes_millimetres() -> None:
    metres = np.linspace(0.0, 2.0, H * W, dtype=np.float32).reshape(H, W)
    metres[0, :3] = [np.nan, np.inf, 100.0]  # no depth, and beyond z16's 65.5 m
    twin = SimulatedCamera("wrist", next(_serials), W, H, FPS, Renderer(counter_image), lambda: metres)
    with open_camera(twin.device, depth=True) as camera:
        twin.publish(0.0)
        depth = camera.wait_for_frame().depth
    assert depth is not None
    np.testing.assert_array_equal(depth[1:], np.round(metres[1:] * 1000).astype(np.uint16))
    assert list(depth[0, :3]) == [0, 0, 0]


def test_color_and_depth_from_one_sensor_and_bgr8_converted() -> None:
    """Like a D405 (color on the stereo sensor) in a mode that only offers bgr8."""
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, next(_serials))
    sensor = device.add_sensor("Stereo Module")
    color = add_stream(sensor, rs.stream.color, rs.format.bgr8, 0, (H, W, 3), np.uint8, FPS)
    depth = add_stream(sensor, rs.stream.depth, rs.format.z16, 1, (H, W), np.uint16, FPS)
    rgb = counter_image(7)
    with open_camera(device, depth=True) as camera:
        color.inject(np.ascontiguousarray(rgb[..., ::-1]), 40.0, 3)  # color first this time
        depth.inject(depth_image(7), 40.0, 3)
        frame = camera.wait_for_frame()
    np.testing.assert_array_equal(frame.color, rgb)
    np.testing.assert_array_equal(frame.depth, depth_image(7))
    assert (frame.frame_number, frame.timestamp_ms) == (3, 40.0)


def test_intrinsics_follow_the_field_of_view(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, _ = sim
    intrinsics = (
        twin.device.query_sensors()[0].get_stream_profiles()[0].as_video_stream_profile().get_intrinsics()
    )
    assert (intrinsics.width, intrinsics.height, intrinsics.ppx, intrinsics.ppy) == (W, H, W / 2, H / 2)
    assert 2 * math.degrees(math.atan(W / 2 / intrinsics.fx)) == pytest.approx(HORIZONTAL_FOV_DEG, abs=1e-4)
    assert intrinsics.fx == intrinsics.fy
    assert twin.device.get_info(rs.camera_info.name) == "Simulated RealSense D435 (top)"


def test_unknown_serial_lists_the_present_ones(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, _ = sim
    directory = CameraDirectory(software_devices=[twin.device])
    with pytest.raises(CameraNotFoundError, match=twin.serial) as raised:
        directory.find("123456789012")
    assert "123456789012" in str(raised.value)
    camera = RealSenseCamera(CameraSpec("top", "123456789012"), directory)
    with pytest.raises(CameraNotFoundError):
        camera.start()


def test_unsupported_mode_lists_the_offered_ones(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, _ = sim
    for spec in ({"width": 640, "height": 480}, {"fps": 60}, {"depth": True}):
        with pytest.raises(CameraStreamError) as raised:
            open_camera(twin.device, **spec)
        expected = "none" if spec.get("depth") else f"{W}x{H} @ {FPS} fps"
        assert f"it offers {expected}." in str(raised.value)
    with open_camera(twin.device) as camera:  # the failed attempts left the sensor closed
        twin.publish(0.0)
        camera.wait_for_frame()


def test_a_stream_that_stops_raises_after_the_stall_timeout(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, _ = sim
    with open_camera(twin.device, stall_timeout=0.2) as camera:
        assert camera.latest() is None  # nothing yet, but not yet stalled either
        time.sleep(0.25)
        with pytest.raises(CameraStreamError, match="no frame since start"):
            camera.latest()
        twin.publish(0.0)
        assert camera.wait_for_frame().frame_number == 0
        assert camera.latest() is not None
        time.sleep(0.25)
        with pytest.raises(CameraStreamError, match="no frame after #0"):
            camera.latest()
        with pytest.raises(CameraStreamError, match=r"no frame after #0 within 0\.05 s"):
            camera.wait_for_frame(after=0, timeout=0.05)


def test_stop_is_idempotent(sim: tuple[SimulatedCamera, Renderer]) -> None:
    twin, _ = sim
    camera = RealSenseCamera(
        CameraSpec("top", twin.serial, W, H, FPS), CameraDirectory(software_devices=[twin.device])
    )
    camera.stop()  # never started
    with pytest.raises(CameraError, match="call start"):
        camera.latest()
    camera.start()
    camera.start()  # already running: nothing happens
    twin.publish(0.0)
    camera.wait_for_frame()
    camera.stop()
    camera.stop()
    with pytest.raises(CameraError, match="call start"):
        camera.wait_for_frame()
    twin.publish(1.0)  # nobody streams: the frame is dropped, quietly
    with camera:  # and it starts again
        twin.publish(2.0)
        assert camera.wait_for_frame().timestamp_ms == 2000.0


def test_publish_checks_the_rendered_image() -> None:
    twin = SimulatedCamera("top", next(_serials), W, H, FPS, lambda: np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        twin.publish(0.0)
    twin.close()
    with pytest.raises(RuntimeError, match="closed"):
        twin.publish(0.0)


def test_real_hardware_directory_without_that_camera() -> None:
    directory = CameraDirectory()  # librealsense's own context: USB devices only
    present = directory.serials()
    with pytest.raises(CameraNotFoundError) as raised:
        directory.find("000000000000")
    message = str(raised.value)
    assert "plugged in" in message
    if not present:  # as on a machine without cameras
        assert "no RealSense device is present" in message
    assert all(serial in message for serial in present)
