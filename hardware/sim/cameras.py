"""Simulated RealSense cameras: librealsense software devices that the twin feeds with rendered images.

The rig reads them with the same `hardware.realsense.RealSenseCamera` that reads a real D435 (register
`SimulatedCamera.device` with a `CameraDirectory`), so the twin exercises the real camera path.

Frames carry the twin's simulated time in the `hardware_clock` timestamp domain: that domain means
"the camera's own clock", which is what the simulated clock is to a simulated camera. `global_time`
and `system_time` would claim the stamps are on the host's clock, which they are not when the twin
runs lock-step, faster or slower than real time.

`software_video_frame.pixels = array` copies the array into a buffer that librealsense frees when
the frame is released (checked on pyrealsense2 2.59), so the rendered array can be reused at once.
A `software_video_frame` must not be reused, though: setting `pixels` again frees the buffer of the
frame already injected while a reader may still hold it (checked: its pixels change under the
reader). So every publish builds fresh frame objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyrealsense2 as rs

HORIZONTAL_FOV_DEG = 69.0  # a D435's color camera
DEPTH_UNITS = 0.001  # metres per z16 unit, a D435's default
TIMESTAMP_DOMAIN = rs.timestamp_domain.hardware_clock


def pinhole_intrinsics(
    width: int, height: int, horizontal_fov_deg: float = HORIZONTAL_FOV_DEG
) -> rs.intrinsics:
    """A distortion-free pinhole with square pixels and the principal point at the image centre."""
    focal = (width / 2) / math.tan(math.radians(horizontal_fov_deg) / 2)
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.fx = intrinsics.fy = focal
    intrinsics.model = rs.distortion.none
    intrinsics.coeffs = [0.0] * 5
    return intrinsics


def depth_to_z16(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (float, as MuJoCo renders it) to z16 units; uint16 is taken as z16 already.

    Depths beyond the z16 range or not finite become 0, which librealsense reads as "no depth".
    """
    if depth.dtype == np.uint16:
        return depth
    if not np.issubdtype(depth.dtype, np.floating):
        raise TypeError(f"render_depth() must return metres (float) or z16 units (uint16), got {depth.dtype}")
    units = np.round(depth / DEPTH_UNITS)
    units[~np.isfinite(units) | (units < 0) | (units > np.iinfo(np.uint16).max)] = 0
    return units.astype(np.uint16)


@dataclass(frozen=True)
class SoftwareStream:
    """A software sensor and its one video stream, with what a frame of it needs."""

    sensor: rs.software_sensor
    profile: rs.video_stream_profile
    shape: tuple[int, ...]
    dtype: type[np.generic]
    bpp: int

    def inject(self, pixels: np.ndarray, timestamp_ms: float, frame_number: int) -> None:
        if pixels.shape != self.shape or pixels.dtype != self.dtype:
            raise ValueError(
                f"rendered {pixels.dtype} image of shape {pixels.shape}; "
                f"this stream takes {np.dtype(self.dtype)} of shape {self.shape}"
            )
        frame = rs.software_video_frame()  # fresh each time: see the module docstring
        frame.pixels = np.ascontiguousarray(
            pixels
        )  # copied: the binding copies raw bytes, so they must be C-order
        frame.bpp = self.bpp
        frame.stride = self.bpp * self.shape[1]
        frame.timestamp = timestamp_ms
        frame.domain = TIMESTAMP_DOMAIN
        frame.frame_number = frame_number
        frame.profile = self.profile
        if self.profile.stream_type() == rs.stream.depth:
            frame.depth_units = DEPTH_UNITS
        self.sensor.on_video_frame(frame)


def add_stream(
    sensor: rs.software_sensor,
    stream: rs.stream,
    fmt: rs.format,
    uid: int,
    shape: tuple[int, ...],
    dtype: type[np.generic],
    fps: int,
) -> SoftwareStream:
    """Adds a stream of `shape`, `dtype` images to a software sensor; `uid` is unique within the device."""
    height, width = shape[:2]
    bpp = int(np.prod(shape[2:], dtype=int)) * np.dtype(dtype).itemsize
    video = rs.video_stream()
    video.type, video.index, video.uid, video.fmt, video.fps = stream, 0, uid, fmt, fps
    video.width, video.height, video.bpp = width, height, bpp
    video.intrinsics = pinhole_intrinsics(width, height)
    profile = sensor.add_video_stream(video).as_video_stream_profile()
    return SoftwareStream(sensor, profile, shape, dtype, bpp)


class SimulatedCamera:
    """A librealsense software device with one color (and optionally depth) stream; the twin calls
    publish() on its simulated clock."""

    def __init__(
        self,
        name: str,
        serial: str,
        width: int,
        height: int,
        fps: int,
        render: Callable[[], np.ndarray],
        render_depth: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self.serial = serial
        self.period = 1.0 / fps
        self.frames_published = 0
        self._render: Callable[[], np.ndarray] | None = render
        self._render_depth = render_depth
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, f"Simulated RealSense D435 ({name})")
        self.device.register_info(rs.camera_info.product_line, "D400")
        self._color = add_stream(
            self.device.add_sensor("RGB Camera"),
            rs.stream.color,
            rs.format.rgb8,
            0,
            (height, width, 3),
            np.uint8,
            fps,
        )
        self._depth: SoftwareStream | None = None
        if render_depth is not None:
            # Rendered by the same simulated camera as the color image, so it shares its intrinsics.
            self._depth = add_stream(
                self.device.add_sensor("Stereo Module"),
                rs.stream.depth,
                rs.format.z16,
                1,
                (height, width),
                np.uint16,
                fps,
            )
            self._depth.sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS)

    @property
    def streaming(self) -> bool:
        """Whether a reader has the color stream open: rendering for nobody would waste 10-30 ms a frame."""
        return bool(self._color.sensor.get_active_streams())

    def publish(self, sim_time: float) -> None:
        """Renders and injects one frame stamped `sim_time` (seconds). Frames nobody streams are dropped."""
        if self._render is None:
            raise RuntimeError(f"simulated camera {self.name!r} is closed")
        timestamp_ms = sim_time * 1000.0
        if self._depth is not None and self._render_depth is not None:
            self._depth.inject(depth_to_z16(self._render_depth()), timestamp_ms, self.frames_published)
        self._color.inject(self._render(), timestamp_ms, self.frames_published)
        self.frames_published += 1

    def close(self) -> None:
        """Stops publishing and lets go of the renderers; a reader then sees its stream stall."""
        self._render = None
        self._render_depth = None
