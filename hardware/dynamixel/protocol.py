"""Dynamixel Protocol 2.0 framing: header, byte stuffing, CRC-16, and an incremental packet reader.

The bus itself frames packets through dynamixel-sdk; this codec serves the side that answers
(the twin's virtual servos) and the tests that build deliberately broken packets.

Frame: FF FF FD 00 | id | length (2, LE) | instruction | params... | crc (2, LE), where
length counts instruction + params + crc after stuffing. Stuffing keeps the header unique: any
FF FF FD inside instruction+params gets one extra FD (FF FF FD -> FF FF FD FD).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class StatusError(IntEnum):
    """The error number in a status packet's error byte (bit 7 is the hardware-alert flag)."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT_BIT = 0x80

STATUS_ERROR_WORDS = {
    StatusError.RESULT_FAIL: "the servo failed to process the instruction",
    StatusError.INSTRUCTION: "undefined or misplaced instruction",
    StatusError.CRC: "the servo received a packet with a bad CRC",
    StatusError.DATA_RANGE: "value out of the item's range",
    StatusError.DATA_LENGTH: "data length does not match the item",
    StatusError.DATA_LIMIT: "value exceeds a limit set in the control table",
    StatusError.ACCESS: "item not writable now (read-only, or EEPROM while torque is on)",
}


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16 (polynomial 0x8005, initial 0, not reflected) as Protocol 2.0 defines it."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert FD after every FF FF FD in instruction+params."""
    return body.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")


def unstuff(body: bytes) -> bytes:
    return body.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


def encode(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet: header, id, length, stuffed instruction+params, CRC."""
    body = stuff(bytes([instruction]) + params)
    head = HEADER + bytes([servo_id]) + (len(body) + 2).to_bytes(2, "little")
    frame = head + body
    return frame + crc16(frame).to_bytes(2, "little")


def encode_status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """A status packet: instruction 0x55, then the error byte, then the data."""
    return encode(servo_id, Instruction.STATUS, bytes([error]) + params)


def encode_fast_status(parts: list[tuple[int, int, bytes]]) -> bytes:
    """The one status packet (id 0xFE) that answers a FAST SYNC READ: per servo (id, error, data), in
    order, `error, id, data, crc`, where each crc covers the packet up to there, as each servo on the
    chain appends its part; the last is the packet's own CRC. Not byte-stuffed: dynamixel-sdk reads
    fast replies without unstuffing."""
    length = 1 + sum(len(data) + 4 for _, _, data in parts)
    frame = bytearray(
        HEADER + bytes([BROADCAST_ID]) + length.to_bytes(2, "little") + bytes([Instruction.STATUS])
    )
    for servo_id, error, data in parts:
        frame += bytes([error, servo_id]) + data
        frame += crc16(frame).to_bytes(2, "little")
    return bytes(frame)


@dataclass(frozen=True)
class Packet:
    """A received packet, unstuffed. For a status packet `params` starts with the error byte."""

    servo_id: int
    instruction: int
    params: bytes
    crc_ok: bool = True


class PacketReader:
    """Finds packets in a byte stream, resynchronising on the header after garbage.

    A header whose length is implausible is skipped; so is one whose packet stops arriving, when the
    caller says so (`abandon`, after its inter-byte timeout): the bytes after it are searched again,
    so packets swallowed by a false header are still found. Work per byte is bounded: no input,
    however hostile, recurses or stalls the reader.

    >>> reader = PacketReader()
    >>> [p.instruction for p in reader.feed(encode(1, Instruction.PING))]
    [1]
    >>> reader.feed(encode(1, Instruction.PING)[:5])  # half a packet: nothing yet
    []
    """

    def __init__(self, max_length: int = 1024) -> None:
        self._buffer = bytearray()
        self._max_length = max_length

    @property
    def partial(self) -> bool:
        """Whether the start of a packet waits for the rest."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        return self._drain()

    def abandon(self) -> list[Packet]:
        """The rest of the partial packet will not come: drop its header and return the packets found
        in the bytes that followed it."""
        del self._buffer[: len(HEADER) if self._buffer.startswith(HEADER) else len(self._buffer)]
        return self._drain()

    def _drain(self) -> list[Packet]:
        packets: list[Packet] = []
        while (packet := self._next()) is not None:
            packets.append(packet)
        return packets

    def _next(self) -> Packet | None:
        buf = self._buffer
        while True:
            start = buf.find(HEADER)
            if start < 0:
                del buf[: max(0, len(buf) - 3)]  # keep a possible partial header at the end
                return None
            del buf[:start]
            if len(buf) < 7:
                return None
            length = int.from_bytes(buf[5:7], "little")
            if 3 <= length <= self._max_length:
                break
            del buf[:1]  # not a real header: skip past it
        total = 7 + length
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        crc_ok = crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")
        body = unstuff(frame[7:-2])
        return Packet(servo_id=frame[4], instruction=body[0], params=body[1:], crc_ok=crc_ok)
