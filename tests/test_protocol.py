"""Protocol 2.0 framing: CRC-16, byte stuffing, packet encoding and the incremental reader.

The e-manual's own packets are the reference for CRC and layout; dynamixel-sdk's stuffing is the
second opinion on stuffing, since the bus frames its packets with it.
"""

from __future__ import annotations

from dynamixel_sdk import PacketHandler

from hardware.dynamixel.protocol import (
    HEADER,
    Instruction,
    Packet,
    PacketReader,
    crc16,
    encode,
    encode_status,
    stuff,
    unstuff,
)

# e-manual, Protocol 2.0, "Ping" example: instruction packet to id 1, and id 1's status packet
# (model number 1030 = 0x0406, firmware 38 = 0x26).
PING_ID1 = bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")
PING_ID1_STATUS = bytes.fromhex("FF FF FD 00 01 07 00 55 00 06 04 26 65 5D")

# A WRITE of 4 bytes at address 116 whose data contains the header pattern FF FF FD.
STUFFED_PARAMS = bytes([116, 0]) + bytes([0x00, 0xFF, 0xFF, 0xFD])


def test_crc16_matches_the_e_manual_ping_instruction() -> None:
    assert crc16(PING_ID1[:-2]) == 0x4E19
    assert crc16(PING_ID1[:-2]).to_bytes(2, "little") == PING_ID1[-2:]


def test_crc16_matches_the_e_manual_ping_status() -> None:
    assert crc16(PING_ID1_STATUS[:-2]) == 0x5D65


def test_crc16_of_nothing_is_zero_and_agrees_with_dynamixel_sdk() -> None:
    assert crc16(b"") == 0
    data = bytes(range(256)) + PING_ID1
    assert crc16(data) == PacketHandler(2.0).updateCRC(0, list(data), len(data))


def test_encode_builds_the_e_manual_ping_packet() -> None:
    assert encode(1, Instruction.PING) == PING_ID1


def test_encode_status_builds_the_e_manual_ping_reply() -> None:
    model, firmware = 1030, 38
    assert encode_status(1, 0, model.to_bytes(2, "little") + bytes([firmware])) == PING_ID1_STATUS


def test_stuffing_inserts_fd_after_header_pattern_and_unstuff_round_trips() -> None:
    body = bytes([Instruction.WRITE]) + STUFFED_PARAMS
    stuffed = stuff(body)
    assert stuffed == body.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")
    assert len(stuffed) == len(body) + 1
    assert unstuff(stuffed) == body
    # No pattern, no change; several patterns, one FD each; an FD that was already there survives.
    assert stuff(b"\x03\xff\xff\xfc\xfd") == b"\x03\xff\xff\xfc\xfd"
    twice = b"\x03\xff\xff\xfd\xff\xff\xfd"
    assert stuff(twice) == b"\x03\xff\xff\xfd\xfd\xff\xff\xfd\xfd"
    assert unstuff(stuff(twice)) == twice
    already = b"\x03\xff\xff\xfd\xfd\x01"
    assert unstuff(stuff(already)) == already


def test_encode_stuffs_params_and_counts_the_stuffed_byte_in_length() -> None:
    packet = encode(1, Instruction.WRITE, STUFFED_PARAMS)
    # instruction (1) + params (6) + one stuffed FD + CRC (2)
    assert int.from_bytes(packet[5:7], "little") == 1 + len(STUFFED_PARAMS) + 1 + 2
    assert len(packet) == 7 + 1 + len(STUFFED_PARAMS) + 1 + 2
    assert packet[7:-2] == bytes([Instruction.WRITE, 116, 0, 0x00, 0xFF, 0xFF, 0xFD, 0xFD])
    # The CRC covers the stuffed frame, and the header appears only at the start.
    assert crc16(packet[:-2]) == int.from_bytes(packet[-2:], "little")
    assert packet.count(HEADER) == 1


def test_encode_agrees_with_dynamixel_sdk_stuffing() -> None:
    sdk = PacketHandler(2.0)
    unstuffed_length = 1 + len(STUFFED_PARAMS) + 2
    raw = [0xFF, 0xFF, 0xFD, 0x00, 1, unstuffed_length, 0, Instruction.WRITE, *STUFFED_PARAMS, 0, 0]
    sdk_packet = sdk.addStuffing(raw)
    total = sdk_packet[5] + 7
    crc = sdk.updateCRC(0, sdk_packet, total - 2)
    sdk_packet[total - 2 : total] = [crc & 0xFF, crc >> 8]
    assert encode(1, Instruction.WRITE, STUFFED_PARAMS) == bytes(sdk_packet[:total])


def test_reader_decodes_a_stuffed_packet_back_to_the_original_params() -> None:
    packets = PacketReader().feed(encode(7, Instruction.WRITE, STUFFED_PARAMS))
    assert packets == [Packet(servo_id=7, instruction=Instruction.WRITE, params=STUFFED_PARAMS, crc_ok=True)]


def test_reader_decodes_a_status_packet_with_error_byte_first() -> None:
    (packet,) = PacketReader().feed(PING_ID1_STATUS)
    assert packet.servo_id == 1
    assert packet.instruction == Instruction.STATUS
    assert packet.params == bytes([0x00, 0x06, 0x04, 0x26])
    assert packet.crc_ok


def test_reader_returns_several_packets_from_one_feed_in_order() -> None:
    stream = (
        encode(1, Instruction.PING)
        + encode_status(2, 0, b"\x01")
        + encode(3, Instruction.READ, b"\x84\x00\x04\x00")
    )
    packets = PacketReader().feed(stream)
    assert [(p.servo_id, p.instruction) for p in packets] == [
        (1, Instruction.PING),
        (2, Instruction.STATUS),
        (3, Instruction.READ),
    ]
    assert all(p.crc_ok for p in packets)


def test_reader_resynchronises_after_garbage() -> None:
    reader = PacketReader()
    # Garbage that includes pieces of a header (FF FF, FF FF FD without the 00) before a real packet.
    garbage = b"\x00\x13\xff\xff\x42\xff\xff\xfd\x07\xff"
    packets = reader.feed(garbage + PING_ID1)
    assert packets == [Packet(servo_id=1, instruction=Instruction.PING, params=b"")]
    # And again after a packet, in a later feed.
    assert reader.feed(b"\xaa\xbb\xcc" + PING_ID1_STATUS)[0].params == bytes([0, 6, 4, 0x26])


def test_reader_keeps_a_partial_header_across_feeds() -> None:
    reader = PacketReader()
    packet = encode(4, Instruction.READ, b"\x84\x00\x04\x00")
    assert reader.feed(b"\x55\x66" + packet[:2]) == []  # garbage, then FF FF
    assert reader.feed(packet[2:3]) == []  # FD
    assert reader.feed(packet[3:]) == [Packet(4, Instruction.READ, b"\x84\x00\x04\x00")]


def test_reader_assembles_a_packet_split_across_feeds() -> None:
    packet = encode(2, Instruction.WRITE, STUFFED_PARAMS)
    for cut in range(1, len(packet)):
        reader = PacketReader()
        assert reader.feed(packet[:cut]) == [], cut
        assert reader.feed(packet[cut:]) == [Packet(2, Instruction.WRITE, STUFFED_PARAMS)], cut
    # One byte at a time.
    reader = PacketReader()
    received = [p for byte in packet for p in reader.feed(bytes([byte]))]
    assert received == [Packet(2, Instruction.WRITE, STUFFED_PARAMS)]


def test_reader_flags_a_bad_crc_and_goes_on_with_the_next_packet() -> None:
    bad = bytearray(PING_ID1_STATUS)
    bad[-1] ^= 0xFF
    packets = PacketReader().feed(bytes(bad) + PING_ID1)
    assert [(p.servo_id, p.crc_ok) for p in packets] == [(1, False), (1, True)]
    assert packets[0].instruction == Instruction.STATUS
    # A flipped data byte is caught too.
    bad = bytearray(PING_ID1_STATUS)
    bad[10] ^= 0x01
    (packet,) = PacketReader().feed(bytes(bad))
    assert not packet.crc_ok


def test_reader_skips_a_header_with_an_absurd_length() -> None:
    reader = PacketReader(max_length=1024)
    absurd = HEADER + b"\x01" + (0xFFFF).to_bytes(2, "little") + b"\x02\x03"
    assert reader.feed(absurd + PING_ID1) == [Packet(1, Instruction.PING, b"")]
    # Just above the limit is skipped too, and so is a length too short to hold instruction and CRC.
    too_long = HEADER + b"\x01" + (1025).to_bytes(2, "little")
    too_short = HEADER + b"\x01" + (2).to_bytes(2, "little")
    assert reader.feed(too_long + too_short + PING_ID1_STATUS) == [
        Packet(1, Instruction.STATUS, bytes([0, 6, 4, 0x26]))
    ]


def test_reader_waits_for_a_long_but_plausible_packet() -> None:
    reader = PacketReader(max_length=1024)
    params = bytes(range(200)) * 5  # 1000 bytes, no header pattern
    packet = encode(3, Instruction.WRITE, params)
    assert reader.feed(packet[:-1]) == []
    assert reader.feed(packet[-1:]) == [Packet(3, Instruction.WRITE, params)]
