"""`rig doctor`: is every device the profile names there, and is it the right one?

Pings every expected servo id (shadows too), compares model numbers with the profile, reads the
firmware and any latched hardware error, checks each port's FTDI latency timer, and opens every
camera until a frame arrives. Every finding that is not OK says how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from hardware.devices import Devices
from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.control_table import decode_hardware_error, model_named
from hardware.dynamixel.errors import DynamixelError, PortError
from hardware.profile import ArmSpec, CameraSettings
from hardware.realsense import CameraError, CameraSpec, RealSenseCamera

CAMERA_WAIT_S = 0.2  # clock time to wait for first frames: long enough at >= 15 fps, short on the twin


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    device: str
    item: str
    status: Status
    detail: str


def check_arm(
    name: str, arm: ArmSpec, port: str, reply_clock: Callable[[], float] | None = None
) -> list[Finding]:
    """One finding per servo (and shadow), plus the port's."""
    bus = DynamixelBus(port, arm.baudrate, reply_clock=reply_clock)
    try:
        bus.open()
    except PortError as exc:
        return [Finding(name, "port", Status.FAIL, str(exc))]
    try:
        findings = [Finding(name, "port", Status.OK, f"{port} at {arm.baudrate} baud")]
        if bus.latency_warning:
            findings.append(Finding(name, "latency timer", Status.WARN, bus.latency_warning))
        for joint, spec in arm.joints.items():
            findings.append(_check_servo(bus, name, joint, spec.id, spec.motor))
            if spec.shadow is not None:
                findings.append(_check_servo(bus, name, f"{joint} (shadow)", spec.shadow, spec.motor))
        return findings
    finally:
        bus.close()


def _check_servo(bus: DynamixelBus, arm: str, joint: str, servo_id: int, motor: str) -> Finding:
    item = f"{joint} id {servo_id}"
    try:
        info = bus.ping(servo_id)
        expected = model_named(motor).number
        if info.model_number != expected:
            return Finding(
                arm,
                item,
                Status.FAIL,
                f"model {info.model or info.model_number} answers, the profile expects {motor}: "
                "fix the profile or the servo's id (Dynamixel Wizard)",
            )
        faults = decode_hardware_error(bus.read(servo_id, "hardware_error_status"))
        if faults:
            return Finding(
                arm,
                item,
                Status.FAIL,
                f"{motor} reports {', '.join(faults)}: remove the cause, then power-cycle or reboot it",
            )
        return Finding(arm, item, Status.OK, f"{motor}, firmware {info.firmware}")
    except DynamixelError as exc:
        return Finding(arm, item, Status.FAIL, str(exc))


def check_camera(name: str, settings: CameraSettings, devices: Devices) -> Finding:
    spec = CameraSpec(name, settings.serial, settings.width, settings.height, settings.fps, settings.depth)
    item = f"serial {settings.serial}"
    camera = RealSenseCamera(spec, devices.cameras)
    try:
        camera.start()
        clock = devices.clock
        clock.sleep_until(clock.now() + CAMERA_WAIT_S)
        frame = camera.wait_for_frame(timeout=2.0)
        height, width = frame.color.shape[:2]
        return Finding(
            name, item, Status.OK, f"{width}x{height} @ {settings.fps} fps, frame #{frame.frame_number}"
        )
    except CameraError as exc:
        return Finding(name, item, Status.FAIL, str(exc))
    finally:
        camera.stop()


def diagnose(devices: Devices) -> list[Finding]:
    profile = devices.profile
    findings: list[Finding] = []
    for name, arm in profile.arms.items():
        findings.extend(check_arm(name, arm, devices.ports[name], devices.reply_clocks.get(name)))
    for name, settings in profile.cameras.items():
        findings.append(check_camera(name, settings, devices))
    return findings


def healthy(findings: Iterable[Finding]) -> bool:
    return all(f.status is not Status.FAIL for f in findings)
