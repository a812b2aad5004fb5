"""A daisy chain of virtual servos answering Protocol 2.0 on a pseudo-terminal.

dynamixel-sdk opens the pty's slave side (`port`) exactly as it opens a USB adapter's tty, so the
driver code under test is the real one. A thread reads instruction packets from the master side
and writes status packets back, in id order as a real chain does.

Fault injection for tests: `drop(id)` (the servo stops answering), `corrupt_replies(id, n)` (its
next n status packets carry a bad CRC), and `VirtualServo.raise_hardware_error` (overload and
friends).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable
from typing import ClassVar

from hardware.dynamixel.protocol import (
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketReader,
    StatusError,
    encode_status,
)
from hardware.sim.servo import VirtualServo


class VirtualServoChain:
    """Servos on one bus. Start with `start()`; `port` is the path a driver opens."""

    def __init__(self, name: str, servos: Iterable[VirtualServo]) -> None:
        self.name = name
        self._servos = {servo.servo_id: servo for servo in servos}
        self._lock = threading.Lock()
        self._dropped: set[int] = set()
        self._corrupt: dict[int, int] = {}
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False
        self.packets_handled = 0

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> VirtualServoChain:
        self._thread = threading.Thread(target=self._serve, name=f"servo-chain-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> VirtualServoChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- access and faults -----------------------------------------------------------------
    def servo(self, servo_id: int) -> VirtualServo:
        return self._servos[servo_id]

    @property
    def ids(self) -> list[int]:
        return sorted(self._servos)

    def locked(self, action: Callable[[], object]) -> object:
        """Run `action` while no packet is being answered (to change servo state consistently)."""
        with self._lock:
            return action()

    def settle(self, timeout: float = 0.1) -> bool:
        """Wait until every byte written to the port so far has been handled.

        A lock-step twin calls this before advancing time, so a goal written without a reply (sync
        write) takes effect before the physics runs on, as it would on a real bus where the write
        reaches the servo in microseconds. False if the chain was still busy at the timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                idle = not self._busy and _bytes_waiting(self._master) == 0
            if idle or self._closed:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0)

    def drop(self, servo_id: int, dropped: bool = True) -> None:
        """Make a servo stop answering (a loose cable, a dead servo), or come back."""
        with self._lock:
            (self._dropped.add if dropped else self._dropped.discard)(servo_id)

    def corrupt_replies(self, servo_id: int, count: int = 1) -> None:
        with self._lock:
            self._corrupt[servo_id] = self._corrupt.get(servo_id, 0) + count

    # ---- serving ---------------------------------------------------------------------------
    def _serve(self) -> None:
        reader = PacketReader()
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            with self._lock:
                self._busy = True
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            for packet in reader.feed(data):
                with self._lock:
                    reply = self._handle(packet)
                    self.packets_handled += 1
                if reply:
                    os.write(self._master, reply)
            with self._lock:
                self._busy = False

    def _live(self, servo_id: int) -> VirtualServo | None:
        servo = self._servos.get(servo_id)
        return None if servo is None or servo_id in self._dropped else servo

    def _status(self, servo: VirtualServo, error: StatusError = StatusError.NONE, data: bytes = b"") -> bytes:
        frame = encode_status(servo.servo_id, int(error) | servo.error_byte, data)
        left = self._corrupt.get(servo.servo_id, 0)
        if left:
            self._corrupt[servo.servo_id] = left - 1
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    def _replies_allowed(self, servo: VirtualServo, instruction: int) -> bool:
        level = servo.get("status_return_level")
        if instruction == Instruction.PING:
            return True
        if instruction in (Instruction.READ, Instruction.SYNC_READ, Instruction.BULK_READ):
            return level >= 1
        return level >= 2

    def _handle(self, packet: Packet) -> bytes:
        target = packet.servo_id
        if not packet.crc_ok:
            servo = self._live(target)
            return self._status(servo, StatusError.CRC) if servo is not None else b""
        handler = self._HANDLERS.get(packet.instruction)
        if handler is None:
            servo = self._live(target)
            return self._status(servo, StatusError.INSTRUCTION) if servo is not None else b""
        return handler(self, packet)

    def _unicast_reply(
        self, packet: Packet, servo: VirtualServo, error: StatusError, data: bytes = b""
    ) -> bytes:
        if packet.servo_id == BROADCAST_ID or not self._replies_allowed(servo, packet.instruction):
            return b""
        return self._status(servo, error, data)

    def _targets(self, servo_id: int) -> list[VirtualServo]:
        if servo_id == BROADCAST_ID:
            return [s for i, s in sorted(self._servos.items()) if i not in self._dropped]
        servo = self._live(servo_id)
        return [servo] if servo is not None else []

    def _ping(self, packet: Packet) -> bytes:
        replies = []
        for servo in self._targets(packet.servo_id):
            data = servo.get("model_number").to_bytes(2, "little") + bytes([servo.get("firmware_version")])
            replies.append(self._status(servo, StatusError.NONE, data))
        return b"".join(replies)

    def _read(self, packet: Packet) -> bytes:
        servo = self._live(packet.servo_id)
        if servo is None:
            return b""
        if len(packet.params) != 4:
            return self._unicast_reply(packet, servo, StatusError.DATA_LENGTH)
        address = int.from_bytes(packet.params[0:2], "little")
        length = int.from_bytes(packet.params[2:4], "little")
        error, data = servo.read(address, length)
        return self._unicast_reply(packet, servo, error, data)

    def _write(self, packet: Packet) -> bytes:
        replies = []
        for servo in self._targets(packet.servo_id):
            if len(packet.params) < 3:
                replies.append(self._unicast_reply(packet, servo, StatusError.DATA_LENGTH))
                continue
            address = int.from_bytes(packet.params[0:2], "little")
            error = servo.write(address, packet.params[2:])
            replies.append(self._unicast_reply(packet, servo, error))
        return b"".join(replies)

    def _reboot(self, packet: Packet) -> bytes:
        replies = []
        for servo in self._targets(packet.servo_id):
            replies.append(self._unicast_reply(packet, servo, StatusError.NONE))
            servo.reboot()
        return b"".join(replies)

    def _sync_read(self, packet: Packet) -> bytes:
        if packet.servo_id != BROADCAST_ID or len(packet.params) < 5:
            return b""
        address = int.from_bytes(packet.params[0:2], "little")
        length = int.from_bytes(packet.params[2:4], "little")
        replies = []
        for servo_id in packet.params[4:]:
            servo = self._live(servo_id)
            if servo is not None and self._replies_allowed(servo, packet.instruction):
                error, data = servo.read(address, length)
                replies.append(self._status(servo, error, data))
        return b"".join(replies)

    def _sync_write(self, packet: Packet) -> bytes:
        if packet.servo_id != BROADCAST_ID or len(packet.params) < 4:
            return b""
        address = int.from_bytes(packet.params[0:2], "little")
        length = int.from_bytes(packet.params[2:4], "little")
        body = packet.params[4:]
        for start in range(0, len(body) - length, length + 1):
            servo = self._live(body[start])
            if servo is not None:
                servo.write(address, body[start + 1 : start + 1 + length])
        return b""

    def _bulk_read(self, packet: Packet) -> bytes:
        if packet.servo_id != BROADCAST_ID:
            return b""
        replies = []
        params = packet.params
        for start in range(0, len(params) - 4, 5):
            servo = self._live(params[start])
            if servo is None or not self._replies_allowed(servo, packet.instruction):
                continue
            address = int.from_bytes(params[start + 1 : start + 3], "little")
            length = int.from_bytes(params[start + 3 : start + 5], "little")
            error, data = servo.read(address, length)
            replies.append(self._status(servo, error, data))
        return b"".join(replies)

    def _bulk_write(self, packet: Packet) -> bytes:
        if packet.servo_id != BROADCAST_ID:
            return b""
        params, start = packet.params, 0
        while start + 5 <= len(params):
            address = int.from_bytes(params[start + 1 : start + 3], "little")
            length = int.from_bytes(params[start + 3 : start + 5], "little")
            servo = self._live(params[start])
            if servo is not None:
                servo.write(address, params[start + 5 : start + 5 + length])
            start += 5 + length
        return b""

    _HANDLERS: ClassVar[dict[int, Callable[[VirtualServoChain, Packet], bytes]]] = {
        Instruction.PING: _ping,
        Instruction.READ: _read,
        Instruction.WRITE: _write,
        Instruction.REBOOT: _reboot,
        Instruction.SYNC_READ: _sync_read,
        Instruction.SYNC_WRITE: _sync_write,
        Instruction.BULK_READ: _bulk_read,
        Instruction.BULK_WRITE: _bulk_write,
    }


def _bytes_waiting(fd: int) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]
