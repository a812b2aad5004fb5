"""Intel RealSense cameras by serial number, each streaming in its own thread.

This uses librealsense's low-level sensor API (device → sensors → stream profiles → `open`/`start`)
rather than `rs.pipeline`, so that the very same code reads the simulated twin's software devices
(`hardware.sim.cameras`), which a pipeline cannot be pointed at. Color and depth may come from one
sensor (D405) or two (D435); either way frames go into one queue, and a color image is paired with
the depth image taken at the same time before it becomes the camera's latest frame.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import pyrealsense2 as rs

from hardware.clock import Clock

COLOR_FORMATS = (rs.format.rgb8, rs.format.bgr8)  # in order of preference; bgr8 is converted
DEPTH_FORMATS = (rs.format.z16,)
DEFAULT_DEPTH_SCALE = 0.001  # metres per z16 unit of a D4xx unless its sensor says otherwise
_QUEUE_CAPACITY = 4  # frames waiting for the camera's thread; older ones are dropped
_POLL_MS = 50  # how often the thread checks whether it should stop
_STALL_ADVICE = "Check its USB cable and port (USB 3), or, in the twin, that the simulation is running."


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a rig profile: its name in the rig, its serial number and its stream mode."""

    name: str
    serial: str
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = False

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.fps) <= 0:
            raise ValueError(f"camera {self.name!r}: width, height and fps must be positive, got {self}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing images element-wise is never what == means
class CameraFrame:
    """One color image (and its depth image) as the device stamped it and as the host received it."""

    color: np.ndarray  # (h, w, 3) uint8, RGB
    depth: np.ndarray | None  # (h, w) uint16 in the camera's depth units (`RealSenseCamera.depth_scale`)
    timestamp_ms: float  # the device's timestamp of the color image
    frame_number: int  # the device's number of the color image
    received: float  # time.monotonic() when the frame arrived on the host
    arrived: float  # the same moment on the rig's clock (simulated time on the twin), for frame ages


class CameraError(RuntimeError):
    """Base of every camera error; messages say what happened and what to do."""


class CameraNotFoundError(CameraError):
    """No device with the requested serial number is present."""

    def __init__(self, serial: str, present: Sequence[str]) -> None:
        self.serial = serial
        self.present = tuple(present)
        seen = (
            f"the RealSense devices present are: {', '.join(self.present)}"
            if self.present
            else "no RealSense device is present"
        )
        super().__init__(
            f"no RealSense camera with serial {serial!r}: {seen}. Check that the camera is plugged in "
            "(a USB 3 port and cable), and that the rig profile names its serial (`rs-enumerate-devices -s`)."
        )


class CameraStreamError(CameraError):
    """The requested mode is not offered, the stream could not be opened, or it stopped."""


def _serial(device: rs.device) -> str | None:
    """The device's serial number, or None for a device that cannot say (e.g. unplugged meanwhile)."""
    try:
        if device.supports(rs.camera_info.serial_number):
            return str(device.get_info(rs.camera_info.serial_number))
    except RuntimeError:
        pass
    return None


class CameraDirectory:
    """Finds RealSense devices by serial.

    Devices enumerated by the librealsense context, plus software devices registered here:
    pyrealsense2 2.59's context does not enumerate software devices added with
    `software_device.add_to(ctx)` (query_devices() stays empty, whatever the product-line mask), so
    the twin registers its devices here instead.
    """

    def __init__(self, context: rs.context | None = None, software_devices: Iterable[rs.device] = ()) -> None:
        self._context = context if context is not None else rs.context()
        self._software = tuple(software_devices)

    def _devices(self) -> list[rs.device]:
        # Enumerated on every call, so a camera plugged in after startup is found.
        return [*self._context.query_devices(), *self._software]

    def serials(self) -> list[str]:
        return [serial for device in self._devices() if (serial := _serial(device)) is not None]

    def find(self, serial: str) -> rs.device:
        for device in self._devices():
            if _serial(device) == serial:
                return device
        raise CameraNotFoundError(serial, self.serials())


@dataclass(frozen=True, eq=False)
class _Image:
    """One stream's image, copied out of librealsense's buffer."""

    pixels: np.ndarray
    timestamp_ms: float
    frame_number: int
    received: float


class _DepthPairing:
    """Pairs each color image with the depth image of the same instant.

    The two streams arrive in either order (and from two sensor threads on a D435), so the newest
    color image waits until a depth image within half a frame period of it has arrived; a color
    image that finds no partner before the next color image is dropped.
    """

    def __init__(self, tolerance_ms: float) -> None:
        self._tolerance_ms = tolerance_ms
        self._color: _Image | None = None
        self._depth: _Image | None = None

    def add(self, image: _Image, is_depth: bool) -> tuple[_Image, _Image] | None:
        if is_depth:
            self._depth = image
        else:
            self._color = image
        color, depth = self._color, self._depth
        if (
            color is None
            or depth is None
            or abs(color.timestamp_ms - depth.timestamp_ms) >= self._tolerance_ms
        ):
            return None
        self._color = None
        return color, depth


def _describe_modes(sensors: Sequence[rs.sensor], stream: rs.stream, formats: Sequence[rs.format]) -> str:
    """The modes a device offers for a stream in the given formats, e.g. "640x480 @ 15/30 fps"."""
    rates: dict[tuple[int, int], set[int]] = {}
    for sensor in sensors:
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == stream and profile.format() in formats:
                video = profile.as_video_stream_profile()
                rates.setdefault((video.width(), video.height()), set()).add(profile.fps())
    if not rates:
        return "none"
    return ", ".join(
        f"{w}x{h} @ {'/'.join(str(fps) for fps in sorted(fpss))} fps"
        for (w, h), fpss in sorted(rates.items())
    )


def _find_profile(
    sensors: Sequence[rs.sensor], spec: CameraSpec, stream: rs.stream, formats: Sequence[rs.format]
) -> tuple[int, rs.stream_profile]:
    """(index of the sensor, profile) for the spec's mode, in the first format of `formats` on offer."""
    for fmt in formats:
        for index, sensor in enumerate(sensors):
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != stream or profile.format() != fmt or profile.fps() != spec.fps:
                    continue
                video = profile.as_video_stream_profile()
                if (video.width(), video.height()) == (spec.width, spec.height):
                    return index, profile
    names = "/".join(fmt.name for fmt in formats)
    raise CameraStreamError(
        f"camera {spec.name!r} (serial {spec.serial}) does not offer {stream.name} "
        f"{spec.width}x{spec.height} @ {spec.fps} fps in {names}; it offers "
        f"{_describe_modes(sensors, stream, formats)}. "
        "Set width, height and fps in the rig profile to one of these."
    )


def _depth_scale(sensor: rs.sensor) -> float:
    if sensor.is_depth_sensor():
        return float(sensor.as_depth_sensor().get_depth_scale())
    if sensor.supports(rs.option.depth_units):
        return float(sensor.get_option(rs.option.depth_units))
    return DEFAULT_DEPTH_SCALE


def _copy_image(frame: rs.frame, received: float) -> _Image:
    """Copies the pixels out, so the image outlives librealsense's buffer (which goes back to its pool)."""
    pixels = np.asanyarray(frame.get_data())
    pixels = pixels[..., ::-1].copy() if frame.get_profile().format() == rs.format.bgr8 else pixels.copy()
    return _Image(pixels, frame.get_timestamp(), frame.get_frame_number(), received)


class RealSenseCamera:
    """One camera in its own thread, always holding its latest frame."""

    def __init__(
        self,
        spec: CameraSpec,
        directory: CameraDirectory,
        stall_timeout: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self.spec = spec
        self.stall_timeout = stall_timeout
        self._clock_now = clock.now if clock is not None else time.monotonic
        self._directory = directory
        self._changed = threading.Condition()  # guards everything the thread writes
        self._latest: CameraFrame | None = None
        self._frames_received = 0
        self._failure: BaseException | None = None
        self._started_at = 0.0
        self._depth_scale: float | None = None
        self._sensors: list[rs.sensor] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _label(self) -> str:
        return f"camera {self.spec.name!r} (serial {self.spec.serial})"

    def start(self) -> None:
        """Opens the stream(s); CameraStreamError when the mode is not offered. No-op when running."""
        if self._thread is not None:
            return
        sensors = self._directory.find(self.spec.serial).query_sensors()
        wanted = {rs.stream.color: COLOR_FORMATS} | (
            {rs.stream.depth: DEPTH_FORMATS} if self.spec.depth else {}
        )
        by_sensor: dict[int, list[rs.stream_profile]] = {}  # streams of one sensor are opened together
        for stream, formats in wanted.items():
            index, profile = _find_profile(sensors, self.spec, stream, formats)
            by_sensor.setdefault(index, []).append(profile)
            if stream == rs.stream.depth:
                self._depth_scale = _depth_scale(sensors[index])
        queue = rs.frame_queue(_QUEUE_CAPACITY * len(wanted))
        self._stopping.clear()
        with self._changed:
            self._latest, self._failure = None, None
        try:
            for index, profiles in by_sensor.items():
                sensor = sensors[index]
                sensor.open(profiles)
                self._sensors.append(sensor)
                sensor.start(queue)
        except RuntimeError as error:
            self._close_sensors()
            raise CameraStreamError(
                f"{self._label()} could not start streaming ({error}). Another program (realsense-viewer, "
                "another `rig`) may hold it; close that, or unplug and replug the camera."
            ) from error
        self._started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(queue,), name=f"camera-{self.spec.name}", daemon=True
        )
        self._thread.start()

    def _run(self, queue: rs.frame_queue) -> None:
        pairing = _DepthPairing(tolerance_ms=500.0 / self.spec.fps) if self.spec.depth else None
        try:
            while not self._stopping.is_set():
                ok, frame = queue.try_wait_for_frame(_POLL_MS)
                if not ok:
                    continue
                image = _copy_image(frame, time.monotonic())
                is_depth = frame.get_profile().stream_type() == rs.stream.depth
                del frame  # hand the buffer back to librealsense now
                if pairing is None:
                    self._publish(image, None)
                elif pair := pairing.add(image, is_depth):
                    self._publish(*pair)
        except Exception as error:  # surfaced to the reader by latest() and wait_for_frame()
            with self._changed:
                self._failure = error
                self._changed.notify_all()

    def _publish(self, color: _Image, depth: _Image | None) -> None:
        frame = CameraFrame(
            color=color.pixels,
            depth=None if depth is None else depth.pixels,
            timestamp_ms=color.timestamp_ms,
            frame_number=color.frame_number,
            received=color.received if depth is None else max(color.received, depth.received),
            arrived=self._clock_now(),
        )
        with self._changed:
            self._latest = frame
            self._frames_received += 1
            self._changed.notify_all()

    def _check_running(self) -> None:
        """Raises when there is no stream to read from. Call with `_changed` held."""
        if self._failure is not None:
            raise CameraStreamError(f"{self._label()} stopped: {self._failure!r}") from self._failure
        if self._thread is None:
            raise CameraError(f"{self._label()} is not streaming: call start() (or use it in a `with` block)")

    def latest(self) -> CameraFrame | None:
        """The newest frame, None before the first; CameraStreamError when the stream has stalled."""
        with self._changed:
            self._check_running()
            frame = self._latest
        silent_since = self._started_at if frame is None else frame.received
        silence = time.monotonic() - silent_since
        if silence > self.stall_timeout:
            what = "no frame since start" if frame is None else f"no frame after #{frame.frame_number}"
            raise CameraStreamError(
                f"{self._label()}: {what} for {silence:.2f} s (stall timeout {self.stall_timeout} s). "
                f"{_STALL_ADVICE}"
            )
        return frame

    def wait_for_frame(self, after: int = -1, timeout: float = 1.0) -> CameraFrame:
        """Blocks until a frame numbered above `after` is the latest; CameraStreamError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._check_running()
                if self._latest is not None and self._latest.frame_number > after:
                    return self._latest
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraStreamError(
                        f"{self._label()}: no frame after #{after} within {timeout} s. {_STALL_ADVICE}"
                    )
                self._changed.wait(remaining)

    @property
    def frames_received(self) -> int:
        with self._changed:
            return self._frames_received

    @property
    def depth_scale(self) -> float | None:
        """Metres per unit of `CameraFrame.depth` (D405: 0.0001, most D4xx: 0.001); None without depth."""
        return self._depth_scale

    def _close_sensors(self) -> None:
        # librealsense raises when a sensor already was stopped or closed, or is gone (unplugged).
        for sensor in self._sensors:
            with contextlib.suppress(RuntimeError):
                sensor.stop()
        for sensor in self._sensors:
            with contextlib.suppress(RuntimeError):
                sensor.close()
        self._sensors = []

    def stop(self) -> None:
        """Stops streaming and the thread. Idempotent."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        self._close_sensors()
        if thread is not None:
            thread.join()

    def __enter__(self) -> RealSenseCamera:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
