"""Typed errors of a Dynamixel bus. Each message says what happened and what to do about it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from hardware.dynamixel.protocol import STATUS_ERROR_WORDS, StatusError


class DynamixelError(RuntimeError):
    """Base of every bus error."""


class PortError(DynamixelError):
    """The serial port cannot be used."""

    def __init__(self, port: str, message: str) -> None:
        super().__init__(message)
        self.port = port


class PortNotFoundError(PortError):
    def __init__(self, port: str) -> None:
        super().__init__(
            port,
            f"serial port {port} does not exist: is the U2D2/USB adapter plugged in and powered? "
            "`ls /dev/serial/by-id/` lists the adapters this machine sees; set that path in the rig profile.",
        )


class PortBusyError(PortError):
    def __init__(self, port: str, detail: str) -> None:
        super().__init__(
            port,
            f"serial port {port} is busy ({detail}): another program holds it. "
            f"`fuser -v {port}` names it; stop it (or the other `rig`) and try again.",
        )


class PortPermissionError(PortError):
    def __init__(self, port: str) -> None:
        super().__init__(
            port,
            f"no permission to open {port}: add yourself to the dialout group "
            "(`sudo usermod -aG dialout $USER`, then log in again).",
        )


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(str(i) for i in sorted(ids))


class ServoTimeoutError(DynamixelError):
    """Servos that did not answer in time."""

    def __init__(self, port: str, ids: Iterable[int]) -> None:
        self.port = port
        self.ids = tuple(sorted(ids))
        super().__init__(
            f"no reply from servo id(s) {_ids(self.ids)} on {port}: check the servo's power and the "
            "daisy-chain cable to it, and that its id and baud rate match the profile "
            "(`rig doctor` scans the bus)."
        )


class CorruptPacketError(DynamixelError):
    """Replies that arrived with a bad CRC or malformed: noise on the line or a failing cable."""

    def __init__(self, port: str, ids: Iterable[int]) -> None:
        self.port = port
        self.ids = tuple(sorted(ids))
        who = f"servo id(s) {_ids(self.ids)}" if self.ids else "an unknown servo"
        super().__init__(
            f"corrupt reply (bad CRC) from {who} on {port}: reseat the cables, keep the bus cable "
            "away from motor power lines, and check that only one program talks on this port."
        )


class ServoHardwareError(DynamixelError):
    """Servos reporting a hardware fault (their alert bit and Hardware Error Status)."""

    def __init__(self, port: str, faults: Mapping[int, list[str]]) -> None:
        self.port = port
        self.faults = dict(faults)
        described = "; ".join(
            f"id {i}: {', '.join(words) or 'unknown fault'}" for i, words in sorted(faults.items())
        )
        super().__init__(
            f"hardware error on {port}: {described}. The servo has turned its torque off; remove the "
            "cause (a blocked joint, heat, supply voltage), then reboot the servo (`rig doctor` shows it)."
        )


class ServoStatusError(DynamixelError):
    """A servo refused an instruction (its status packet carried an error number)."""

    def __init__(self, port: str, servo_id: int, code: int, what: str) -> None:
        self.port = port
        self.servo_id = servo_id
        self.code = StatusError(code)
        words = STATUS_ERROR_WORDS.get(self.code, f"error {code}")
        super().__init__(f"servo id {servo_id} on {port} refused {what}: {words}.")
