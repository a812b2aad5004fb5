"""A daisy chain of virtual servos answering Protocol 2.0 on a pseudo-terminal.

dynamixel-sdk opens the pty's slave side (`port`) exactly as it opens a USB adapter's tty, so the
driver code under test is the real one. A thread reads instruction packets from the master side
and writes status packets back, in id order as a real chain does.

That thread answers when it gets the CPU (and the interpreter): on a loaded machine, later than a
real servo's microseconds. `quiet_time` is the clock a driver's reply timeout should run on here: it
advances only while the chain has nothing to do and nothing in flight, so a reply is never late
because the machine was busy, and a servo that does not answer is still noticed.

A chain survives any bytes: framing is resynchronised on the header, a packet that stops arriving
is dropped after `INTER_BYTE_TIMEOUT_S` of silence (the bytes after its header are searched again),
and an error while answering one packet is kept (`take_problems`, shown by `rig sim`) instead of
ending the thread.

Where the twin departs from a real X-series servo (see README, "The simulated twin"): FACTORY_RESET,
CLEAR and FAST_BULK_READ are answered with Instruction Error, as an instruction the servo does not
know; a FAST_SYNC_READ reply leaves out servos that do not answer (a real chain's later servos would
wait for them); servos given the same id both answer, where a real bus would garble the replies.

Fault injection for tests: `drop(id)` (the servo stops answering), `corrupt_replies(id, n)` (its
next n status packets carry a bad CRC), `delay_replies(seconds, n)` (the chain's next n replies come
late, as when its thread waits for a CPU on a loaded machine), and
`VirtualServo.raise_hardware_error` (overload and friends).
"""

from __future__ import annotations

import collections
import os
import select
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
    encode_fast_status,
    encode_status,
)
from hardware.sim.servo import VirtualServo

SETTLE_TIMEOUT_S = 10.0  # lock-step waits for the chain however busy the machine; only a hung chain ends it
SETTLE_POLL_S = 0.0001  # a real sleep, so the chain's thread gets the interpreter while we wait
# Silence after which a partial packet is dropped. A real servo resets its receiver when a packet
# stops arriving; a driver writes each packet at once, so this only ever fires on broken input.
INTER_BYTE_TIMEOUT_S = 0.01
PROBLEMS_KEPT = 20
READ_INSTRUCTIONS = (
    Instruction.READ,
    Instruction.SYNC_READ,
    Instruction.FAST_SYNC_READ,
    Instruction.BULK_READ,
)


class VirtualServoChain:
    """Servos on one bus. Start with `start()`; `port` is the path a driver opens."""

    def __init__(self, name: str, servos: Iterable[VirtualServo]) -> None:
        self.name = name
        self._servos = list(servos)  # looked up by the id each holds now: a WRITE may change it
        self._lock = threading.Lock()
        self._dropped: set[int] = set()
        self._corrupt: dict[int, int] = {}
        self._delays: collections.deque[float] = collections.deque()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)  # replies nobody reads are lost, never a stuck thread
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False
        self._quiet_s = 0.0  # see quiet_time
        self._sampled: tuple[float, bool] | None = None  # (when, whether quiet) at the last sample
        self.packets_handled = 0
        self.replies_lost = 0
        self._problems: collections.deque[str] = collections.deque(maxlen=PROBLEMS_KEPT)

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
        for servo in self._servos:
            if servo.servo_id == servo_id:
                return servo
        raise KeyError(f"chain {self.name} has no servo with id {servo_id}; ids: {self.ids}")

    @property
    def ids(self) -> list[int]:
        return sorted(servo.servo_id for servo in self._servos)

    def take_problems(self) -> list[str]:
        """What went wrong while serving since the last call (the latest few), oldest first; empty for
        a healthy chain. A chain whose thread has ended says so every time."""
        with self._lock:
            problems = list(self._problems)
            self._problems.clear()
        if self._thread is not None and not self._thread.is_alive() and not self._closed:
            problems.append(f"chain {self.name} stopped answering: its thread ended")
        return problems

    def locked(self, action: Callable[[], object]) -> object:
        """Run `action` while no packet is being answered (to change servo state consistently)."""
        with self._lock:
            return action()

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until every byte written to the port so far has been handled.

        A lock-step twin calls this before advancing time, so a goal written without a reply (sync
        write) takes effect before the physics runs on, as it would on a real bus where the write
        reaches the servo in microseconds, however long this machine takes to get there. False if
        the chain was still busy at the timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                idle = not self._busy and not _readable(self._master)
            if idle or self._closed:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(SETTLE_POLL_S)

    def quiet_time(self) -> float:
        """Seconds during which the chain had nothing to do: no instruction waiting or being answered,
        no reply waiting to be read. Sampled by whoever waits for a reply (as the SDK polls its
        timeout): time between two quiet samples counts. Only the waiting driver reads the replies,
        so while one is coming some sample finds it in flight: a late reply never runs this clock."""
        now = time.monotonic()
        with self._lock:
            quiet = self._closed or not (self._busy or _readable(self._master) or _readable(self._slave))
            if quiet and self._sampled is not None and self._sampled[1]:
                self._quiet_s += now - self._sampled[0]
            self._sampled = (now, quiet)
            return self._quiet_s

    def drop(self, servo_id: int, dropped: bool = True) -> None:
        """Make a servo stop answering (a loose cable, a dead servo), or come back."""
        with self._lock:
            (self._dropped.add if dropped else self._dropped.discard)(servo_id)

    def corrupt_replies(self, servo_id: int, count: int = 1) -> None:
        with self._lock:
            self._corrupt[servo_id] = self._corrupt.get(servo_id, 0) + count

    def delay_replies(self, seconds: float, count: int = 1) -> None:
        """Hold the chain's next `count` replies back `seconds` (wall clock) each: its thread waiting
        for a CPU, as on a loaded machine."""
        with self._lock:
            self._delays.extend([seconds] * count)

    # ---- serving ---------------------------------------------------------------------------
    def _serve(self) -> None:
        reader = PacketReader()
        while True:
            timeout = INTER_BYTE_TIMEOUT_S if reader.partial else None
            ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return
            with self._lock:
                self._busy = True
            if ready:
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError:
                    return
                packets = reader.feed(data)
            else:
                packets = reader.abandon()  # the rest of a packet never came
            for packet in packets:
                reply = self._answer(packet)
                if reply:
                    self._wait_injected_delay()
                    self._send(reply)
            with self._lock:
                self._busy = False

    def _send(self, reply: bytes) -> None:
        """Put a reply on the line. When the line is full (a driver that writes and never reads), the
        rest of it is lost, as on a bus nobody listens to."""
        try:
            while reply:
                reply = reply[os.write(self._master, reply) :]
        except BlockingIOError:
            self.replies_lost += 1

    def _answer(self, packet: Packet) -> bytes:
        """The reply to one packet; a failure to answer it is kept as a problem, not raised, so one
        bad packet never silences the chain."""
        with self._lock:
            self.packets_handled += 1
            try:
                return self._handle(packet)
            except Exception as error:  # any bug here must not end the chain's thread
                self._problems.append(
                    f"chain {self.name}: no reply to instruction 0x{packet.instruction:02X} for id "
                    f"{packet.servo_id}: {type(error).__name__}: {error}"
                )
                return b""

    def _wait_injected_delay(self) -> None:
        with self._lock:
            delay = self._delays.popleft() if self._delays else 0.0
        if delay:
            time.sleep(delay)  # still busy: a lock-step twin's settle() waits for this reply too

    def _live(self, servo_id: int) -> VirtualServo | None:
        if servo_id in self._dropped:
            return None
        return next((servo for servo in self._servos if servo.servo_id == servo_id), None)

    def _status(
        self,
        servo: VirtualServo,
        error: StatusError = StatusError.NONE,
        data: bytes = b"",
        servo_id: int | None = None,
    ) -> bytes:
        stamp = servo.servo_id if servo_id is None else servo_id
        frame = encode_status(stamp, int(error) | servo.error_byte, data)
        return self._maybe_corrupt(servo, frame)

    def _maybe_corrupt(self, servo: VirtualServo, frame: bytes) -> bytes:
        """The frame with its last byte flipped while `corrupt_replies` has some left for the servo."""
        left = self._corrupt.get(servo.servo_id, 0)
        if left:
            self._corrupt[servo.servo_id] = left - 1
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    def _replies_allowed(self, servo: VirtualServo, instruction: int) -> bool:
        level = servo.get("status_return_level")
        if instruction == Instruction.PING:
            return True
        if instruction in READ_INSTRUCTIONS:
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
        """The status packet for a unicast instruction, stamped with the id it was sent to (a WRITE
        that changes the id is still answered from the id the driver waits for)."""
        if packet.servo_id == BROADCAST_ID or not self._replies_allowed(servo, packet.instruction):
            return b""
        return self._status(servo, error, data, servo_id=packet.servo_id)

    def _targets(self, servo_id: int) -> list[VirtualServo]:
        if servo_id == BROADCAST_ID:
            live = [s for s in self._servos if s.servo_id not in self._dropped]
            return sorted(live, key=lambda servo: servo.servo_id)
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
        return self._write_each(packet, VirtualServo.write)

    def _reg_write(self, packet: Packet) -> bytes:
        return self._write_each(packet, VirtualServo.register)

    def _write_each(self, packet: Packet, apply: Callable[[VirtualServo, int, bytes], StatusError]) -> bytes:
        """A WRITE-shaped instruction (address, then data) applied by each servo it is for."""
        replies = []
        for servo in self._targets(packet.servo_id):
            if len(packet.params) < 3:
                replies.append(self._unicast_reply(packet, servo, StatusError.DATA_LENGTH))
                continue
            address = int.from_bytes(packet.params[0:2], "little")
            replies.append(self._unicast_reply(packet, servo, apply(servo, address, packet.params[2:])))
        return b"".join(replies)

    def _action(self, packet: Packet) -> bytes:
        replies = []
        for servo in self._targets(packet.servo_id):
            replies.append(self._unicast_reply(packet, servo, servo.action()))
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

    def _fast_sync_read(self, packet: Packet) -> bytes:
        """One status packet for all the listed servos that answer (see encode_fast_status)."""
        if packet.servo_id != BROADCAST_ID or len(packet.params) < 5:
            return b""
        address = int.from_bytes(packet.params[0:2], "little")
        length = int.from_bytes(packet.params[2:4], "little")
        parts, answering = [], []
        for servo_id in packet.params[4:]:
            servo = self._live(servo_id)
            if servo is not None and self._replies_allowed(servo, packet.instruction):
                error, data = servo.read(address, length)
                parts.append((servo.servo_id, int(error) | servo.error_byte, data.ljust(length, b"\0")))
                answering.append(servo)
        if not parts:
            return b""
        frame = encode_fast_status(parts)
        for servo in answering:  # a corrupted part spoils the whole packet's CRC
            frame = self._maybe_corrupt(servo, frame)
        return frame

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
        Instruction.REG_WRITE: _reg_write,
        Instruction.ACTION: _action,
        Instruction.REBOOT: _reboot,
        Instruction.SYNC_READ: _sync_read,
        Instruction.FAST_SYNC_READ: _fast_sync_read,
        Instruction.SYNC_WRITE: _sync_write,
        Instruction.BULK_READ: _bulk_read,
        Instruction.BULK_WRITE: _bulk_write,
    }


def _readable(fd: int) -> bool:
    """Whether bytes written to the pty's other side wait to be read. Unlike FIONREAD, poll makes the
    kernel hand over bytes still in flight between the sides first (the pty's flip buffer, pushed by
    a kernel worker that a loaded machine may delay), so a write just made is never missed."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)
