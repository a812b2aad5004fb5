"""Virtual servos on a pseudo-terminal, driven by plain dynamixel-sdk as a real bus would be.

Nothing here goes through our bus class: the SDK frames the packets, the chain answers them, so
these tests pin that the twin's servos behave like real X-series servos on the wire.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator

import pytest
from dynamixel_sdk import (
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupSyncRead,
    GroupSyncWrite,
    PacketHandler,
    PortHandler,
    port_handler,
)

from hardware.dynamixel.control_table import (
    CENTER_TICK,
    SYNC_STATE_ADDRESS,
    SYNC_STATE_LENGTH,
    TICKS_PER_REV,
    OperatingMode,
    model_named,
)
from hardware.dynamixel.protocol import ALERT_BIT, BROADCAST_ID, HEADER, Instruction, StatusError, encode
from hardware.sim.servo import HeldJoint, VirtualServo
from hardware.sim.servo_chain import INTER_BYTE_TIMEOUT_S, VirtualServoChain

BAUD = 1_000_000
MODELS = {1: "XM430-W350", 2: "XM540-W270", 3: "XL330-M288"}
NUMBERS = {1: 1020, 2: 1120, 3: 1200}
POSES = {1: 0.1, 2: -0.2, 3: 0.3}  # radians, at the backend
FIRMWARE = {1: 48, 2: 48, 3: 46}
ABSENT_ID = 9

# Addresses (X-series control table)
FIRMWARE_VERSION, DRIVE_MODE, OPERATING_MODE, HOMING_OFFSET = 6, 10, 11, 20
MAX_POSITION_LIMIT, MIN_POSITION_LIMIT = 48, 52
TORQUE_ENABLE, LED, STATUS_RETURN_LEVEL, HARDWARE_ERROR_STATUS = 64, 65, 68, 70
POSITION_P_GAIN, GOAL_VELOCITY, PROFILE_VELOCITY, GOAL_POSITION = 84, 104, 112, 116
PRESENT_LOAD = PRESENT_CURRENT = 126
PRESENT_VELOCITY, PRESENT_POSITION = 128, 132
MODEL_NUMBER, VELOCITY_LIMIT, CURRENT_LIMIT = 0, 44, 38
GOAL_PWM, GOAL_CURRENT, PWM_LIMIT = 100, 102, 36


def ticks(radians: float) -> int:
    """What a servo with no homing offset and normal direction reports for a backend angle."""
    return CENTER_TICK + round(radians * TICKS_PER_REV / (2 * math.pi))


def motor_radians(ticks: int) -> float:
    return (ticks - CENTER_TICK) * 2 * math.pi / TICKS_PER_REV


def signed32(value: int) -> int:
    return signed(value, 4)


def signed(value: int, size: int) -> int:
    bits = 8 * size
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


@pytest.fixture
def chain() -> Iterator[VirtualServoChain]:
    servos = [
        VirtualServo(i, model_named(MODELS[i]), HeldJoint(POSES[i]), firmware=FIRMWARE[i]) for i in MODELS
    ]
    with VirtualServoChain("test", servos) as started:
        yield started


@pytest.fixture
def port(chain: VirtualServoChain) -> Iterator[PortHandler]:
    handler = PortHandler(chain.port)
    assert handler.openPort()
    assert handler.setBaudRate(BAUD)
    yield handler
    handler.closePort()


@pytest.fixture
def ph() -> PacketHandler:
    return PacketHandler(2.0)


def held(chain: VirtualServoChain, servo_id: int) -> HeldJoint:
    backend = chain.servo(servo_id).backend
    assert isinstance(backend, HeldJoint)
    return backend


def write_ok(
    ph: PacketHandler, port: PortHandler, servo_id: int, address: int, size: int, value: int
) -> None:
    writer = {1: ph.write1ByteTxRx, 2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[size]
    result, error = writer(port, servo_id, address, value & ((1 << (8 * size)) - 1))
    assert (result, error) == (COMM_SUCCESS, 0), (servo_id, address, value, result, error)


def read_ok(ph: PacketHandler, port: PortHandler, servo_id: int, address: int, size: int) -> int:
    reader = {1: ph.read1ByteTxRx, 2: ph.read2ByteTxRx, 4: ph.read4ByteTxRx}[size]
    value, result, error = reader(port, servo_id, address)
    assert (result, error) == (COMM_SUCCESS, 0), (servo_id, address, result, error)
    return value


def read_error(ph: PacketHandler, port: PortHandler, servo_id: int, address: int, size: int) -> int:
    """The error byte of a read that is answered."""
    _, result, error = ph.readTxRx(port, servo_id, address, size)
    assert result == COMM_SUCCESS
    return error


def send_raw(port: PortHandler, packet: bytes, wait_ms: float = 250.0) -> tuple[list[int], int]:
    """Write bytes the SDK did not frame, then read one status packet (or time out)."""
    port.clearPort()
    assert port.writePort(list(packet)) == len(packet)
    port.setPacketTimeoutMillis(wait_ms)
    return PacketHandler(2.0).rxPacket(port, False)


# ---- discovery -----------------------------------------------------------------------------


def test_ping_reports_model_number_and_firmware_reads_at_address_6(
    port: PortHandler, ph: PacketHandler
) -> None:
    for servo_id in MODELS:
        number, result, error = ph.ping(port, servo_id)
        assert (number, result, error) == (NUMBERS[servo_id], COMM_SUCCESS, 0)
        assert read_ok(ph, port, servo_id, FIRMWARE_VERSION, 1) == FIRMWARE[servo_id]
        assert read_ok(ph, port, servo_id, MODEL_NUMBER, 2) == NUMBERS[servo_id]


def test_broadcast_ping_lists_every_servo_with_model_and_firmware(
    port: PortHandler, ph: PacketHandler
) -> None:
    found, result = ph.broadcastPing(port)
    assert result == COMM_SUCCESS
    assert found == {i: [NUMBERS[i], FIRMWARE[i]] for i in MODELS}


def test_unicast_to_an_absent_or_dropped_id_times_out(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    _, result, _ = ph.ping(port, ABSENT_ID)
    assert result == COMM_RX_TIMEOUT
    _, result, _ = ph.read4ByteTxRx(port, ABSENT_ID, PRESENT_POSITION)
    assert result == COMM_RX_TIMEOUT
    result, _ = ph.write1ByteTxRx(port, ABSENT_ID, LED, 1)
    assert result == COMM_RX_TIMEOUT

    chain.drop(2)
    _, result, _ = ph.ping(port, 2)
    assert result == COMM_RX_TIMEOUT
    assert ph.ping(port, 1)[1:] == (COMM_SUCCESS, 0)
    chain.drop(2, False)
    assert ph.ping(port, 2) == (NUMBERS[2], COMM_SUCCESS, 0)


# ---- items ---------------------------------------------------------------------------------


def test_read_and_write_items_of_each_size(port: PortHandler, ph: PacketHandler) -> None:
    for servo_id in MODELS:
        assert read_ok(ph, port, servo_id, PRESENT_POSITION, 4) == ticks(POSES[servo_id])
        assert read_ok(ph, port, servo_id, LED, 1) == 0
        write_ok(ph, port, servo_id, LED, 1, 1)
        assert read_ok(ph, port, servo_id, LED, 1) == 1
        write_ok(ph, port, servo_id, POSITION_P_GAIN, 2, 640 + servo_id)
        assert read_ok(ph, port, servo_id, POSITION_P_GAIN, 2) == 640 + servo_id
        write_ok(ph, port, servo_id, PROFILE_VELOCITY, 4, 30_000 + servo_id)
        assert read_ok(ph, port, servo_id, PROFILE_VELOCITY, 4) == 30_000 + servo_id
    # A read of several items at once returns them as laid out in memory.
    data, result, error = ph.readTxRx(port, 1, TORQUE_ENABLE, 2)
    assert (data, result, error) == ([0, 1], COMM_SUCCESS, 0)


def test_a_write_of_several_items_at_once_applies_them_all(port: PortHandler, ph: PacketHandler) -> None:
    # profile_velocity (112..115) and goal_position (116..119) in one WRITE.
    data = (100).to_bytes(4, "little") + (2500).to_bytes(4, "little")
    assert ph.writeTxRx(port, 1, PROFILE_VELOCITY, 8, list(data)) == (COMM_SUCCESS, 0)
    assert read_ok(ph, port, 1, PROFILE_VELOCITY, 4) == 100
    assert read_ok(ph, port, 1, GOAL_POSITION, 4) == 2500


def test_eeprom_write_with_torque_on_is_refused_with_access_error(
    port: PortHandler, ph: PacketHandler
) -> None:
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    result, error = ph.write1ByteTxRx(port, 1, OPERATING_MODE, OperatingMode.EXTENDED_POSITION)
    assert (result, error) == (COMM_SUCCESS, StatusError.ACCESS)
    result, error = ph.write4ByteTxRx(port, 1, HOMING_OFFSET, 100)
    assert (result, error) == (COMM_SUCCESS, StatusError.ACCESS)
    assert read_ok(ph, port, 1, OPERATING_MODE, 1) == OperatingMode.POSITION
    assert read_ok(ph, port, 1, HOMING_OFFSET, 4) == 0
    # With torque off the same write is accepted; RAM items were writable all along.
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 0)
    write_ok(ph, port, 1, OPERATING_MODE, 1, OperatingMode.EXTENDED_POSITION)
    assert read_ok(ph, port, 1, OPERATING_MODE, 1) == OperatingMode.EXTENDED_POSITION


def test_write_to_a_read_only_item_is_refused_with_access_error(port: PortHandler, ph: PacketHandler) -> None:
    before = read_ok(ph, port, 1, PRESENT_POSITION, 4)
    assert ph.write4ByteTxRx(port, 1, PRESENT_POSITION, 1234) == (COMM_SUCCESS, StatusError.ACCESS)
    assert ph.write2ByteTxRx(port, 1, MODEL_NUMBER, 1060) == (COMM_SUCCESS, StatusError.ACCESS)
    assert ph.write1ByteTxRx(port, 1, FIRMWARE_VERSION, 1) == (COMM_SUCCESS, StatusError.ACCESS)
    assert ph.write1ByteTxRx(port, 1, HARDWARE_ERROR_STATUS, 0) == (COMM_SUCCESS, StatusError.ACCESS)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == before
    assert read_ok(ph, port, 1, MODEL_NUMBER, 2) == NUMBERS[1]


def test_write_out_of_an_items_range_is_refused_with_data_range_error(
    port: PortHandler, ph: PacketHandler
) -> None:
    assert ph.write1ByteTxRx(port, 1, TORQUE_ENABLE, 2) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    assert ph.write1ByteTxRx(port, 1, STATUS_RETURN_LEVEL, 3) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    assert ph.write4ByteTxRx(port, 1, VELOCITY_LIMIT, 1024) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    too_far = -2_000_000 & 0xFFFFFFFF
    assert ph.write4ByteTxRx(port, 1, HOMING_OFFSET, too_far) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    assert read_ok(ph, port, 1, TORQUE_ENABLE, 1) == 0
    assert read_ok(ph, port, 1, STATUS_RETURN_LEVEL, 1) == 2
    assert read_ok(ph, port, 1, VELOCITY_LIMIT, 4) == 200
    assert read_ok(ph, port, 1, HOMING_OFFSET, 4) == 0
    # The limits themselves are accepted.
    write_ok(ph, port, 1, VELOCITY_LIMIT, 4, 1023)
    write_ok(ph, port, 1, HOMING_OFFSET, 4, -1_044_479)


def test_write_with_the_wrong_data_length_is_refused_with_data_length_error(
    port: PortHandler, ph: PacketHandler
) -> None:
    assert ph.write2ByteTxRx(port, 1, GOAL_POSITION, 3000) == (COMM_SUCCESS, StatusError.DATA_LENGTH)
    assert ph.write1ByteTxRx(port, 1, POSITION_P_GAIN, 10) == (COMM_SUCCESS, StatusError.DATA_LENGTH)
    assert ph.write2ByteTxRx(port, 1, HOMING_OFFSET, 10) == (COMM_SUCCESS, StatusError.DATA_LENGTH)
    assert read_ok(ph, port, 1, POSITION_P_GAIN, 2) == 800
    assert read_ok(ph, port, 1, HOMING_OFFSET, 4) == 0
    # A READ instruction with three parameters instead of four.
    packet, result = send_raw(port, encode(1, Instruction.READ, bytes([PRESENT_POSITION, 0, 4])))
    assert result == COMM_SUCCESS
    assert packet[4] == 1
    assert packet[8] == StatusError.DATA_LENGTH


def test_read_past_the_end_of_the_control_table_is_a_data_range_error(
    port: PortHandler, ph: PacketHandler
) -> None:
    assert read_error(ph, port, 1, 140, 10) == StatusError.DATA_RANGE
    assert read_error(ph, port, 1, 144, 4) == 0  # input voltage, temperature, backup ready: the last bytes


def test_data_containing_the_header_pattern_survives_stuffing_both_ways(
    port: PortHandler, ph: PacketHandler
) -> None:
    # Goal velocity -1 (FF FF FF FF) then profile acceleration 253 (FD 00 00 00): FF FF FD on the wire.
    data = [0xFF, 0xFF, 0xFF, 0xFF, 0xFD, 0x00, 0x00, 0x00]
    assert ph.writeTxRx(port, 1, GOAL_VELOCITY, len(data), data) == (COMM_SUCCESS, 0)
    read, result, error = ph.readTxRx(port, 1, GOAL_VELOCITY, len(data))
    assert (result, error) == (COMM_SUCCESS, 0)
    assert read == data


# ---- position behaviour --------------------------------------------------------------------


def test_goal_position_outside_the_position_limits_is_refused_with_data_limit_error(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    # e-manual, X-series Goal Position (116): in position mode its range is the position limits, and
    # a write beyond them is answered with Data Limit Error and not applied.
    write_ok(ph, port, 1, MAX_POSITION_LIMIT, 4, 3000)
    write_ok(ph, port, 1, MIN_POSITION_LIMIT, 4, 1000)
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 1, GOAL_POSITION, 4, 2222)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == 2222

    for beyond in (3500, 200, 3001, 999):
        assert ph.write4ByteTxRx(port, 1, GOAL_POSITION, beyond) == (COMM_SUCCESS, StatusError.DATA_LIMIT)
        assert read_ok(ph, port, 1, GOAL_POSITION, 4) == 2222
        assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == 2222
    assert held(chain, 1).position == pytest.approx(motor_radians(2222))

    write_ok(ph, port, 1, GOAL_POSITION, 4, 3000)  # the limits themselves are allowed
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == 3000


def test_a_sync_write_beyond_the_position_limits_is_ignored_for_that_servo_only(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    for servo_id in (1, 2):
        write_ok(ph, port, servo_id, MAX_POSITION_LIMIT, 4, 3000)
        write_ok(ph, port, servo_id, TORQUE_ENABLE, 1, 1)
        write_ok(ph, port, servo_id, GOAL_POSITION, 4, 2000)
    group = GroupSyncWrite(port, ph, GOAL_POSITION, 4)
    group.addParam(1, list((2500).to_bytes(4, "little")))
    group.addParam(2, list((3500).to_bytes(4, "little")))
    assert group.txPacket() == COMM_SUCCESS
    assert chain.settle()
    assert read_ok(ph, port, 1, GOAL_POSITION, 4) == 2500
    assert read_ok(ph, port, 2, GOAL_POSITION, 4) == 2000


def test_goals_beyond_their_velocity_current_and_pwm_limits_are_data_limit_errors(
    port: PortHandler, ph: PacketHandler
) -> None:
    write_ok(ph, port, 1, VELOCITY_LIMIT, 4, 100)
    write_ok(ph, port, 1, CURRENT_LIMIT, 2, 500)
    write_ok(ph, port, 1, PWM_LIMIT, 2, 300)
    for address, size, beyond, within in (
        (GOAL_VELOCITY, 4, -101, -100),
        (GOAL_CURRENT, 2, 501, 500),
        (GOAL_PWM, 2, 301, -300),
    ):
        writer = {2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[size]
        raw = beyond & ((1 << (8 * size)) - 1)
        assert writer(port, 1, address, raw) == (COMM_SUCCESS, StatusError.DATA_LIMIT)
        assert signed(read_ok(ph, port, 1, address, size), size) == 0  # refused: unchanged
        write_ok(ph, port, 1, address, size, within)
        assert signed(read_ok(ph, port, 1, address, size), size) == within


@pytest.mark.parametrize("mode", [OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION])
def test_multi_turn_modes_ignore_the_position_limits_within_256_turns(
    port: PortHandler, ph: PacketHandler, mode: int
) -> None:
    write_ok(ph, port, 1, OPERATING_MODE, 1, mode)
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 1, GOAL_POSITION, 4, 9000)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == 9000
    write_ok(ph, port, 1, GOAL_POSITION, 4, -3000)
    assert signed32(read_ok(ph, port, 1, PRESENT_POSITION, 4)) == -3000
    # e-manual: -1,048,575 .. 1,048,575 in these modes; beyond is out of the item's range.
    assert ph.write4ByteTxRx(port, 1, GOAL_POSITION, 1_048_576) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    assert signed32(read_ok(ph, port, 1, GOAL_POSITION, 4)) == -3000


def test_homing_offset_and_reverse_drive_mode_change_the_reported_position(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    raw = ticks(POSES[1]) - CENTER_TICK  # 65 ticks from the centre
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == CENTER_TICK + raw

    # Present position = centre + motor ticks + homing offset.
    write_ok(ph, port, 1, HOMING_OFFSET, 4, -1000)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == CENTER_TICK + raw - 1000

    # Reverse mode (drive mode bit 0) counts the other way round the centre.
    write_ok(ph, port, 1, DRIVE_MODE, 1, 1)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == CENTER_TICK - raw - 1000
    write_ok(ph, port, 1, HOMING_OFFSET, 4, 0)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == CENTER_TICK - raw

    # Goals are in the same frame as what is reported: the servo goes where it was told.
    write_ok(ph, port, 1, HOMING_OFFSET, 4, 500)
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 1, GOAL_POSITION, 4, 2300)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == 2300
    # reversed: motor angle = -(2300 - 2048 - 500) ticks
    assert held(chain, 1).position == pytest.approx(motor_radians(CENTER_TICK - (2300 - CENTER_TICK - 500)))
    # The other servos are untouched.
    assert read_ok(ph, port, 2, PRESENT_POSITION, 4) == ticks(POSES[2])


# ---- status return level -------------------------------------------------------------------


def set_status_return_level(port: PortHandler, ph: PacketHandler, servo_id: int, level: int) -> None:
    assert ph.write1ByteTxOnly(port, servo_id, STATUS_RETURN_LEVEL, level) == COMM_SUCCESS
    # A ping always answers; once it has, the chain has handled the write before it.
    assert ph.ping(port, servo_id)[1] == COMM_SUCCESS


def test_status_return_level_1_answers_ping_and_read_but_not_write(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    set_status_return_level(port, ph, 1, 1)
    assert read_ok(ph, port, 1, STATUS_RETURN_LEVEL, 1) == 1
    result, _ = ph.write1ByteTxRx(port, 1, LED, 1)
    assert result == COMM_RX_TIMEOUT
    assert read_ok(ph, port, 1, LED, 1) == 1  # the write was applied all the same
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)
    # Other servos still answer everything.
    write_ok(ph, port, 2, LED, 1, 1)


def test_status_return_level_0_answers_only_ping(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    set_status_return_level(port, ph, 1, 0)
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)
    _, result, _ = ph.read1ByteTxRx(port, 1, LED)
    assert result == COMM_RX_TIMEOUT
    result, _ = ph.write1ByteTxRx(port, 1, LED, 1)
    assert result == COMM_RX_TIMEOUT
    assert ph.ping(port, 1)[1] == COMM_SUCCESS
    assert chain.locked(lambda: chain.servo(1).get("led")) == 1
    # Not in a sync read either: servo 1 is the one that stays silent.
    group = GroupSyncRead(port, ph, PRESENT_POSITION, 4)
    for servo_id in MODELS:
        group.addParam(servo_id)
    assert group.txRxPacket() == COMM_RX_TIMEOUT
    group.removeParam(1)
    assert group.txRxPacket() == COMM_SUCCESS


# ---- group instructions --------------------------------------------------------------------


def test_sync_read_of_current_velocity_and_position_answers_for_all_ids_in_one_packet(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    group = GroupSyncRead(port, ph, SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH)
    for servo_id in MODELS:
        assert group.addParam(servo_id)
    before = chain.packets_handled
    assert group.txRxPacket() == COMM_SUCCESS
    assert chain.packets_handled == before + 1
    for servo_id in MODELS:
        assert group.isAvailable(servo_id, SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH)
        assert signed32(group.getData(servo_id, PRESENT_POSITION, 4)) == ticks(POSES[servo_id])
        assert group.getData(servo_id, PRESENT_VELOCITY, 4) == 0
        assert group.getData(servo_id, PRESENT_CURRENT, 2) == 0
    # Repeated reads follow the servos.
    write_ok(ph, port, 3, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 3, GOAL_POSITION, 4, 3333)
    assert group.txRxPacket() == COMM_SUCCESS
    assert group.getData(3, PRESENT_POSITION, 4) == 3333


def test_sync_write_moves_servos_with_torque_on_and_not_those_with_torque_off(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 2, TORQUE_ENABLE, 1, 1)
    goals = {1: 1000, 2: 3000, 3: 1500}
    group = GroupSyncWrite(port, ph, GOAL_POSITION, 4)
    for servo_id, goal in goals.items():
        assert group.addParam(servo_id, list(goal.to_bytes(4, "little")))
    before = chain.packets_handled
    assert group.txPacket() == COMM_SUCCESS

    for servo_id in (1, 2):
        assert read_ok(ph, port, servo_id, PRESENT_POSITION, 4) == goals[servo_id]
        assert held(chain, servo_id).position == pytest.approx(motor_radians(goals[servo_id]))
    # Torque off: the goal is stored, but the joint stays where it is.
    assert read_ok(ph, port, 3, GOAL_POSITION, 4) == goals[3]
    assert read_ok(ph, port, 3, PRESENT_POSITION, 4) == ticks(POSES[3])
    assert held(chain, 3).position == POSES[3]
    # One packet for all of them (then the reads above).
    assert chain.packets_handled == before + 1 + 4


def test_settle_returns_only_once_a_sync_write_just_sent_has_been_applied(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    """What lock-step rests on: the goal written at a tick's end acts before physics runs on. The
    pty hands bytes to the chain's side through a kernel worker, so they can still be in flight
    when the write returns (most of the time on this machine, longer on a loaded one)."""
    group = GroupSyncWrite(port, ph, GOAL_POSITION, 4)
    for goal in range(1000, 1200):
        group.clearParam()
        assert group.addParam(1, list(goal.to_bytes(4, "little")))
        assert group.txPacket() == COMM_SUCCESS
        assert chain.settle()
        assert chain.locked(lambda: chain.servo(1).get("goal_position")) == goal


def test_delayed_replies_come_late_and_settle_waits_for_them(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain.delay_replies(0.3)
    _, result, _ = ph.readTxRx(port, 1, PRESENT_POSITION, 4)
    assert result == COMM_RX_TIMEOUT  # the SDK waited ~100 ms (conftest), the reply takes 300
    started = time.monotonic()
    assert chain.settle()  # the late reply has gone out (to nobody)
    assert time.monotonic() - started > 0.1
    # The next exchange is answered, and with the right value, not the stale reply's bytes. It gets a
    # second to do so: under CI's load 100 ms once was not enough, which is not what this checks.
    monkeypatch.setattr(port_handler, "LATENCY_TIMER", 499)
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == ticks(POSES[1])


def test_bulk_read_reads_different_items_from_different_ids(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    write_ok(ph, port, 2, LED, 1, 1)
    group = GroupBulkRead(port, ph)
    assert group.addParam(1, PRESENT_POSITION, 4)
    assert group.addParam(2, TORQUE_ENABLE, 2)  # torque enable and LED
    assert group.addParam(3, MODEL_NUMBER, 2)
    before = chain.packets_handled
    assert group.txRxPacket() == COMM_SUCCESS
    assert chain.packets_handled == before + 1
    assert group.getData(1, PRESENT_POSITION, 4) == ticks(POSES[1])
    assert group.getData(2, TORQUE_ENABLE, 1) == 0
    assert group.getData(2, LED, 1) == 1
    assert group.getData(3, MODEL_NUMBER, 2) == NUMBERS[3]
    assert not group.isAvailable(1, LED, 1)  # not what was asked of servo 1


def test_sync_read_works_for_xl430_where_address_126_is_present_load(
    port: PortHandler, ph: PacketHandler
) -> None:
    xl430 = model_named("XL430-W250")
    assert xl430.item("present_load").address == PRESENT_LOAD
    assert "present_current" not in xl430.items
    servos = [VirtualServo(i, xl430, HeldJoint(0.05 * i)) for i in (11, 12)]
    with VirtualServoChain("xl430", servos) as chain:
        handler = PortHandler(chain.port)
        assert handler.openPort()
        try:
            assert handler.setBaudRate(BAUD)
            assert ph.ping(handler, 11) == (1060, COMM_SUCCESS, 0)
            group = GroupSyncRead(handler, ph, SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH)
            for servo_id in (11, 12):
                group.addParam(servo_id)
            assert group.txRxPacket() == COMM_SUCCESS
            for servo_id in (11, 12):
                assert group.getData(servo_id, PRESENT_LOAD, 2) == 0
                assert group.getData(servo_id, PRESENT_VELOCITY, 4) == 0
                assert group.getData(servo_id, PRESENT_POSITION, 4) == ticks(0.05 * servo_id)
            # The XL430 has no current limit: address 38 holds no item.
            assert ph.write2ByteTxRx(handler, 11, CURRENT_LIMIT, 100) == (COMM_SUCCESS, StatusError.ACCESS)
        finally:
            handler.closePort()


# ---- faults and reboot ---------------------------------------------------------------------


def test_hardware_error_sets_the_alert_bit_and_turns_torque_off_until_reboot(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    overload = 1 << 5
    write_ok(ph, port, 2, TORQUE_ENABLE, 1, 1)
    chain.locked(lambda: chain.servo(2).raise_hardware_error(overload))

    number, result, error = ph.ping(port, 2)
    assert (number, result) == (NUMBERS[2], COMM_SUCCESS)
    assert error & ALERT_BIT
    value, result, error = ph.read1ByteTxRx(port, 2, HARDWARE_ERROR_STATUS)
    assert (value, result, error) == (overload, COMM_SUCCESS, ALERT_BIT)
    value, _, error = ph.read1ByteTxRx(port, 2, TORQUE_ENABLE)
    assert (value, error) == (0, ALERT_BIT)
    # Torque cannot come back while the error is latched.
    assert ph.write1ByteTxRx(port, 2, TORQUE_ENABLE, 1) == (COMM_SUCCESS, ALERT_BIT)
    assert ph.read1ByteTxRx(port, 2, TORQUE_ENABLE)[0] == 0
    # Every reply carries the alert, even a refused write's: error number and alert together.
    assert ph.write1ByteTxRx(port, 2, LED, 5) == (COMM_SUCCESS, ALERT_BIT | StatusError.DATA_RANGE)
    # Others are unaffected.
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)

    assert ph.reboot(port, 2)[0] == COMM_SUCCESS
    assert ph.ping(port, 2) == (NUMBERS[2], COMM_SUCCESS, 0)
    assert read_ok(ph, port, 2, HARDWARE_ERROR_STATUS, 1) == 0
    assert read_ok(ph, port, 2, TORQUE_ENABLE, 1) == 0
    write_ok(ph, port, 2, TORQUE_ENABLE, 1, 1)
    assert read_ok(ph, port, 2, TORQUE_ENABLE, 1) == 1


def test_reboot_turns_torque_off_and_resets_ram_but_keeps_eeprom(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    write_ok(ph, port, 1, HOMING_OFFSET, 4, 100)  # EEPROM
    write_ok(ph, port, 1, TORQUE_ENABLE, 1, 1)
    write_ok(ph, port, 1, LED, 1, 1)
    write_ok(ph, port, 1, GOAL_POSITION, 4, 2500)
    assert held(chain, 1).torque

    result, error = ph.reboot(port, 1)
    assert (result, error) == (COMM_SUCCESS, 0)
    assert read_ok(ph, port, 1, TORQUE_ENABLE, 1) == 0
    assert not held(chain, 1).torque
    assert read_ok(ph, port, 1, LED, 1) == 0
    assert read_ok(ph, port, 1, HOMING_OFFSET, 4) == 100
    # The goal is where the servo is, so torque on after a reboot does not jump.
    assert read_ok(ph, port, 1, GOAL_POSITION, 4) == read_ok(ph, port, 1, PRESENT_POSITION, 4) == 2500


# ---- the wire ------------------------------------------------------------------------------


def test_a_packet_with_a_bad_crc_never_gets_a_normal_reply_and_is_not_applied(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    for instruction, params in (
        (Instruction.READ, bytes([PRESENT_POSITION, 0, 4, 0])),
        (Instruction.WRITE, bytes([LED, 0, 1])),
        (Instruction.PING, b""),
    ):
        packet = bytearray(encode(1, instruction, params))
        packet[-2] ^= 0x5A
        reply, result = send_raw(port, bytes(packet))
        if result == COMM_SUCCESS:
            # A status that says "bad CRC" and carries no data.
            assert reply[4] == 1
            assert reply[7] == Instruction.STATUS
            assert reply[8] & ~ALERT_BIT == StatusError.CRC
            assert int.from_bytes(bytes(reply[5:7]), "little") == 4
        else:
            assert result == COMM_RX_TIMEOUT
    assert read_ok(ph, port, 1, LED, 1) == 0  # the corrupted write did nothing
    # The line is usable right after.
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)


def test_broadcast_write_gets_no_reply_but_applies_to_all(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    before = chain.packets_handled
    reply, result = send_raw(port, encode(BROADCAST_ID, Instruction.WRITE, bytes([LED, 0, 1])))
    assert (reply, result) == ([], COMM_RX_TIMEOUT)
    for servo_id in MODELS:
        assert read_ok(ph, port, servo_id, LED, 1) == 1
    assert chain.packets_handled == before + 1 + len(MODELS)  # one write, then the reads
    # The SDK's broadcast write does not wait for replies either.
    assert ph.write1ByteTxRx(port, BROADCAST_ID, LED, 0) == (COMM_SUCCESS, 0)
    for servo_id in MODELS:
        assert read_ok(ph, port, servo_id, LED, 1) == 0


# ---- instructions beyond read and write (e-manual, Protocol 2.0) ---------------------------------

ID, REGISTERED_INSTRUCTION = 7, 69


def test_a_write_that_changes_the_id_moves_the_servo_to_the_new_id(
    port: PortHandler, ph: PacketHandler
) -> None:
    # The reply comes from the id the driver addressed, so the SDK accepts it.
    assert ph.write1ByteTxRx(port, 1, ID, 11) == (COMM_SUCCESS, 0)
    assert ph.ping(port, 1)[1] == COMM_RX_TIMEOUT
    assert ph.ping(port, 11) == (NUMBERS[1], COMM_SUCCESS, 0)
    reply, result = send_raw(port, encode(11, Instruction.PING))
    assert result == COMM_SUCCESS and reply[4] == 11  # stamped with the id it now answers at
    assert read_ok(ph, port, 11, ID, 1) == 11
    assert ph.write1ByteTxRx(port, 11, ID, 1) == (COMM_SUCCESS, 0)
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)


def test_reg_write_is_checked_at_once_and_applied_by_action(port: PortHandler, ph: PacketHandler) -> None:
    assert ph.regWriteTxRx(port, 1, LED, 1, [1]) == (COMM_SUCCESS, 0)
    assert ph.regWriteTxRx(port, 2, LED, 1, [1]) == (COMM_SUCCESS, 0)
    assert read_ok(ph, port, 1, LED, 1) == 0  # not yet
    assert read_ok(ph, port, 1, REGISTERED_INSTRUCTION, 1) == 1
    assert ph.action(port, BROADCAST_ID) == COMM_SUCCESS  # broadcast: no reply, both act
    assert read_ok(ph, port, 1, LED, 1) == read_ok(ph, port, 2, LED, 1) == 1
    assert read_ok(ph, port, 1, REGISTERED_INSTRUCTION, 1) == 0
    # ACTION with nothing registered is an Instruction Error; a bad value is refused at REG_WRITE.
    reply, result = send_raw(port, encode(1, Instruction.ACTION))
    assert result == COMM_SUCCESS and reply[8] == StatusError.INSTRUCTION
    assert ph.regWriteTxRx(port, 1, LED, 1, [5]) == (COMM_SUCCESS, StatusError.DATA_RANGE)
    assert read_ok(ph, port, 1, REGISTERED_INSTRUCTION, 1) == 0


def test_fast_sync_read_answers_for_all_ids_in_one_packet(port: PortHandler, ph: PacketHandler) -> None:
    reader = GroupSyncRead(port, ph, PRESENT_POSITION, 4)
    for servo_id in MODELS:
        assert reader.addParam(servo_id)
    assert reader.fastSyncRead() == COMM_SUCCESS
    for servo_id in MODELS:
        assert reader.getData(servo_id, PRESENT_POSITION, 4) == ticks(POSES[servo_id])


@pytest.mark.parametrize(
    ("instruction", "params"),
    [(Instruction.FACTORY_RESET, b"\xff"), (Instruction.CLEAR, bytes([0x01, 0x44, 0x58, 0x4C, 0x22]))],
)
def test_instructions_the_twin_does_not_implement_answer_instruction_error(
    port: PortHandler, ph: PacketHandler, instruction: int, params: bytes
) -> None:
    write_ok(ph, port, 1, HOMING_OFFSET, 4, 100)
    reply, result = send_raw(port, encode(1, instruction, params))
    assert result == COMM_SUCCESS and reply[8] == StatusError.INSTRUCTION
    assert read_ok(ph, port, 1, HOMING_OFFSET, 4) == 100  # nothing was reset


# ---- hostile input: a chain answers whatever was written before ----------------------------------


def test_a_thousand_repeated_headers_do_not_silence_the_chain(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    # Each header's "length" is the next header's bytes (FF FD = 64,991): not a packet, skipped.
    assert port.writePort(list(HEADER * 1100)) == 4400
    assert chain.settle()
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)
    assert chain.take_problems() == []


def test_a_packet_that_stops_arriving_is_dropped_after_the_inter_byte_timeout(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    half = HEADER + bytes([1]) + (1000).to_bytes(2, "little") + bytes([Instruction.WRITE, 65, 0])
    assert port.writePort(list(half)) == len(half)
    time.sleep(3 * INTER_BYTE_TIMEOUT_S)
    assert ph.ping(port, 1) == (NUMBERS[1], COMM_SUCCESS, 0)
    # A packet swallowed by the false header (same write) is found once the header is dropped.
    reply, result = send_raw(port, half + encode(2, Instruction.PING))
    assert result == COMM_SUCCESS and reply[4] == 2
    assert read_ok(ph, port, 1, LED, 1) == 0


def test_thousands_of_malformed_packets_leave_the_chain_answering(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler
) -> None:
    rng = random.Random(14)
    for _ in range(int(os.environ.get("RIG_FUZZ_PACKETS", "3000"))):  # the review sent 14,000
        port.writePort(list(malformed_packet(rng)))
    assert chain.settle()
    port.clearPort()
    assert chain.take_problems() == []
    servo_id = chain.ids[0]  # random WRITEs may have moved a servo to another id
    number, result, _ = ph.ping(port, servo_id)
    assert result == COMM_SUCCESS and number in NUMBERS.values()


def test_an_error_answering_one_packet_is_reported_and_the_chain_answers_the_next(
    chain: VirtualServoChain, port: PortHandler, ph: PacketHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(address: int, length: int) -> tuple[StatusError, bytes]:
        raise RuntimeError("backend fell over")

    monkeypatch.setattr(chain.servo(2), "read", broken)
    assert ph.read4ByteTxRx(port, 2, PRESENT_POSITION)[1] == COMM_RX_TIMEOUT
    (problem,) = chain.take_problems()
    assert "instruction 0x02 for id 2: RuntimeError: backend fell over" in problem
    assert read_ok(ph, port, 1, PRESENT_POSITION, 4) == ticks(POSES[1])


def malformed_packet(rng: random.Random) -> bytes:
    """One of the ways a line can be wrong: noise, a false header, a cut, a bad CRC, a valid frame
    around a random instruction and parameters."""
    ids = (1, 2, 3, ABSENT_ID, BROADCAST_ID, rng.randrange(256))
    params = rng.randbytes(rng.randrange(0, 40))
    frame = encode(rng.choice(ids), rng.randrange(256), params)
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:
        return HEADER + bytes([rng.choice(ids)]) + rng.randrange(65536).to_bytes(2, "little") + params[:4]
    if kind == 2:
        return frame[: rng.randrange(1, len(frame))]
    if kind == 3:
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])
    return frame
