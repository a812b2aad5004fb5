"""A Dynamixel Protocol 2.0 bus over dynamixel-sdk, with typed errors instead of result codes.

The SDK frames and times packets; this class adds what a rig needs on top: items by name from the
model's control table, one sync read of present current, velocity and position (126..135) that
tells which servos did not answer, sync writes of goals, errors that say what to do, and reply
timeouts on a clock of the caller's choosing (the twin's servos answer from a thread that may wait
for a CPU: their clock runs only while the chain is idle).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dynamixel_sdk import COMM_RX_CORRUPT, COMM_RX_TIMEOUT, COMM_SUCCESS, PacketHandler, PortHandler

from hardware.dynamixel.control_table import (
    MODELS_BY_NUMBER,
    SYNC_STATE_ADDRESS,
    SYNC_STATE_LENGTH,
    X_SERIES_ITEMS,
    Item,
    MotorModel,
    decode_hardware_error,
    model_named,
)
from hardware.dynamixel.errors import (
    CorruptPacketError,
    PortBusyError,
    PortError,
    PortNotFoundError,
    PortPermissionError,
    ServoHardwareError,
    ServoStatusError,
    ServoTimeoutError,
)
from hardware.dynamixel.latency import USB_SERIAL_SYSFS, latency_timer_warning
from hardware.dynamixel.protocol import ALERT_BIT

log = logging.getLogger(__name__)

FIRMWARE = X_SERIES_ITEMS["firmware_version"]
HARDWARE_ERROR = X_SERIES_ITEMS["hardware_error_status"]
READ_WAIT_S = 0.002


@dataclass(frozen=True)
class ServoInfo:
    """What a ping tells: who is there and which firmware it runs."""

    servo_id: int
    model_number: int
    firmware: int

    @property
    def model(self) -> str | None:
        model = MODELS_BY_NUMBER.get(self.model_number)
        return model.name if model else None


@dataclass(frozen=True)
class ServoStates:
    """One sync read, in raw control-table units, indexed like `ids`."""

    ids: tuple[int, ...]
    position: np.ndarray  # int32 ticks
    velocity: np.ndarray  # int32, 0.229 rpm
    current: np.ndarray  # int16, the model's current unit (load in 0.1 % on an XL430)


class _PortHandler(PortHandler):
    """The SDK's port, timing its replies on `reply_clock` (seconds) instead of the wall clock; None
    keeps the wall clock."""

    def __init__(self, port: str, reply_clock: Callable[[], float] | None) -> None:
        super().__init__(port)
        self._reply_clock = reply_clock

    def getCurrentTime(self) -> float:  # the SDK's name; milliseconds, what its timeouts are in
        if self._reply_clock is None:
            return float(super().getCurrentTime())
        return self._reply_clock() * 1000.0


class DynamixelBus:
    """One serial port with servos on it. Use as a context manager, or open() / close()."""

    def __init__(
        self,
        port: str,
        baudrate: int = 1_000_000,
        motors: Mapping[int, str] | None = None,
        sysfs: Path = USB_SERIAL_SYSFS,
        reply_clock: Callable[[], float] | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self._sysfs = sysfs
        self._models: dict[int, MotorModel] = {i: model_named(m) for i, m in (motors or {}).items()}
        self._handler = _PortHandler(port, reply_clock)
        self._packets = PacketHandler(2.0)
        self._lock_fd: int | None = None
        self.latency_warning: str | None = None

    # ---- life cycle ------------------------------------------------------------------------
    def open(self) -> DynamixelBus:
        if not os.path.exists(self.port):
            raise PortNotFoundError(self.port)
        self._lock_port()
        try:
            if not self._handler.openPort() or not self._handler.setBaudRate(self.baudrate):
                raise PortError(
                    self.port, f"cannot set {self.port} to {self.baudrate} baud: not a rate it supports"
                )
        except PortError:
            self._unlock_port()
            raise
        except OSError as exc:  # pyserial's SerialException is an OSError
            self._unlock_port()
            raise self._port_error(exc) from exc
        # The SDK polls a non-blocking port in a busy loop; a short blocking read waits in select()
        # instead, leaving the CPU (and the interpreter) to other threads until bytes arrive.
        self._handler.ser.timeout = READ_WAIT_S
        self.latency_warning = latency_timer_warning(self.port, self._sysfs)
        if self.latency_warning:
            log.warning(self.latency_warning)
        return self

    def close(self) -> None:
        if self._handler.is_open:
            self._handler.closePort()
        self._unlock_port()

    def __enter__(self) -> DynamixelBus:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _lock_port(self) -> None:
        """An advisory exclusive lock, so two programs never talk on one bus at once."""
        try:
            fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise self._port_error(exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise PortBusyError(self.port, "locked by another process") from None
        self._lock_fd = fd

    def _unlock_port(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _port_error(self, exc: OSError) -> PortError:
        if exc.errno == errno.ENOENT:
            return PortNotFoundError(self.port)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PortPermissionError(self.port)
        if exc.errno == errno.EBUSY:
            return PortBusyError(self.port, os.strerror(exc.errno))
        return PortError(self.port, f"cannot open {self.port}: {exc}")

    # ---- discovery -------------------------------------------------------------------------
    def ping(self, servo_id: int) -> ServoInfo:
        number, result, error = self._packets.ping(self._handler, servo_id)
        self._check(servo_id, result, error, "a ping", allow_alert=True)
        firmware = self._read_raw(servo_id, FIRMWARE.address, FIRMWARE.size, allow_alert=True)
        if number in MODELS_BY_NUMBER:
            self._models.setdefault(servo_id, MODELS_BY_NUMBER[number])
        return ServoInfo(servo_id, number, firmware)

    def scan(self) -> list[ServoInfo]:
        """Every servo on the bus, by one broadcast ping."""
        found, result = self._packets.broadcastPing(self._handler)
        if result not in (COMM_SUCCESS, COMM_RX_TIMEOUT):
            raise CorruptPacketError(self.port, [])
        return [ServoInfo(i, number, firmware) for i, (number, firmware) in sorted(found.items())]

    def model(self, servo_id: int) -> MotorModel:
        if servo_id not in self._models:
            self.ping(servo_id)
        if servo_id not in self._models:
            raise KeyError(f"servo id {servo_id} on {self.port} is not a model this rig knows")
        return self._models[servo_id]

    # ---- items by name ---------------------------------------------------------------------
    def read(self, servo_id: int, name: str) -> int:
        item = self.model(servo_id).item(name)
        raw = self._read_raw(servo_id, item.address, item.size, allow_alert=name == "hardware_error_status")
        return _signed(raw, item.size) if item.signed else raw

    def write(self, servo_id: int, name: str, value: int) -> None:
        item = self.model(servo_id).item(name)
        try:
            data = int(value).to_bytes(item.size, "little", signed=item.signed)
        except OverflowError:
            raise ValueError(f"{name}={value} does not fit the item's {item.size} byte(s)") from None
        writer = {
            1: self._packets.write1ByteTxRx,
            2: self._packets.write2ByteTxRx,
            4: self._packets.write4ByteTxRx,
        }
        result, error = writer[item.size](
            self._handler, servo_id, item.address, int.from_bytes(data, "little")
        )
        self._check(servo_id, result, error, f"a write of {name}={value}")

    def set_torque(self, ids: Iterable[int], enabled: bool) -> None:
        for servo_id in ids:
            self.write(servo_id, "torque_enable", int(enabled))

    def set_operating_mode(self, ids: Iterable[int], mode: int) -> None:
        """Operating mode is an EEPROM item: torque must be off, so this turns it off first."""
        for servo_id in ids:
            self.write(servo_id, "torque_enable", 0)
            self.write(servo_id, "operating_mode", mode)

    def reboot(self, servo_id: int) -> None:
        result, error = self._packets.reboot(self._handler, servo_id)
        self._check(servo_id, result, error, "a reboot", allow_alert=True)

    # ---- the 50 Hz path --------------------------------------------------------------------
    def sync_read_state(self, ids: Sequence[int]) -> ServoStates:
        """Present current, velocity and position of `ids` in one sync read (addresses 126..135)."""
        ids = tuple(ids)
        received = self._sync_read(ids, SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH)
        block = np.frombuffer(b"".join(received[i] for i in ids), dtype=np.uint8)
        block = block.reshape(len(ids), SYNC_STATE_LENGTH)
        return ServoStates(
            ids=ids,
            current=_state_field(block, X_SERIES_ITEMS["present_current"]),
            velocity=_state_field(block, X_SERIES_ITEMS["present_velocity"]),
            position=_state_field(block, X_SERIES_ITEMS["present_position"]),
        )

    def sync_write(self, name: str, values: Mapping[int, int]) -> None:
        """One packet that sets `name` on every servo in `values` (no replies, by protocol)."""
        if not values:
            return
        item = self.model(next(iter(values))).item(name)
        param = b"".join(
            bytes([i]) + int(v).to_bytes(item.size, "little", signed=item.signed) for i, v in values.items()
        )
        result = self._packets.syncWriteTxOnly(self._handler, item.address, item.size, param, len(param))
        self._check(None, result, 0, f"a sync write of {name}")

    def sync_write_goal_position(self, values: Mapping[int, int]) -> None:
        self.sync_write("goal_position", values)

    # ---- internals -------------------------------------------------------------------------
    def _sync_read(self, ids: tuple[int, ...], address: int, length: int) -> dict[int, bytes]:
        handler, packets = self._handler, self._packets
        result = packets.syncReadTx(handler, address, length, list(ids), len(ids), False)
        self._check(None, result, 0, "a sync read")
        received: dict[int, bytes] = {}
        errors: dict[int, int] = {}
        corrupt: set[int] = set()
        try:
            while len(received) + len(corrupt) < len(ids):
                packet, result = packets.rxPacket(handler, False)
                if result == COMM_RX_CORRUPT:
                    corrupt.add(packet[4] if len(packet) > 4 and packet[4] in ids else -1)
                    continue
                if result != COMM_SUCCESS:
                    break
                servo_id = packet[4]
                if servo_id in ids:
                    received[servo_id] = bytes(packet[9 : 9 + length])
                    errors[servo_id] = packet[8]
        finally:
            handler.is_using = False
        missing = set(ids) - set(received) - corrupt
        if missing:
            raise ServoTimeoutError(self.port, missing)
        if corrupt:
            raise CorruptPacketError(self.port, corrupt - {-1})
        alerts = [i for i, e in errors.items() if e & ALERT_BIT]
        if alerts:
            raise ServoHardwareError(self.port, {i: self._hardware_faults(i) for i in alerts})
        for servo_id, error in errors.items():
            if error:
                raise ServoStatusError(self.port, servo_id, error & ~ALERT_BIT, "a sync read")
        return received

    def _read_raw(self, servo_id: int, address: int, size: int, allow_alert: bool = False) -> int:
        data, result, error = self._packets.readTxRx(self._handler, servo_id, address, size)
        self._check(servo_id, result, error, f"a read at address {address}", allow_alert=allow_alert)
        return int.from_bytes(bytes(data), "little")

    def _hardware_faults(self, servo_id: int) -> list[str]:
        status = self._read_raw(servo_id, HARDWARE_ERROR.address, HARDWARE_ERROR.size, allow_alert=True)
        return decode_hardware_error(status)

    def _check(
        self, servo_id: int | None, result: int, error: int, what: str, allow_alert: bool = False
    ) -> None:
        if result == COMM_RX_TIMEOUT:
            raise ServoTimeoutError(self.port, [] if servo_id is None else [servo_id])
        if result == COMM_RX_CORRUPT:
            raise CorruptPacketError(self.port, [] if servo_id is None else [servo_id])
        if result != COMM_SUCCESS:
            raise PortError(self.port, f"{what} failed on {self.port}: {self._packets.getTxRxResult(result)}")
        if servo_id is None:
            return
        if error & ALERT_BIT and not allow_alert:
            raise ServoHardwareError(self.port, {servo_id: self._hardware_faults(servo_id)})
        if error & ~ALERT_BIT:
            raise ServoStatusError(self.port, servo_id, error & ~ALERT_BIT, what)


def _signed(raw: int, size: int) -> int:
    bits = 8 * size
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


def _state_field(block: np.ndarray, item: Item) -> np.ndarray:
    """One signed item of every servo's row of a sync state read (rows start at SYNC_STATE_ADDRESS)."""
    start = item.address - SYNC_STATE_ADDRESS
    return block[:, start : start + item.size].copy().view(f"<i{item.size}")[:, 0]
