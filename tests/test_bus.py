"""DynamixelBus against virtual servos on a pseudo-terminal: typed errors, items by name, sync I/O.

The only stand-in is a temporary folder in place of /sys/bus/usb-serial/devices for the FTDI
latency-timer check, since no FTDI adapter is attached here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hardware.dynamixel.bus import DynamixelBus, ServoInfo
from hardware.dynamixel.control_table import CENTER_TICK, TICKS_PER_REV, OperatingMode, model_named
from hardware.dynamixel.errors import (
    CorruptPacketError,
    DynamixelError,
    PortBusyError,
    PortNotFoundError,
    ServoHardwareError,
    ServoStatusError,
    ServoTimeoutError,
)
from hardware.dynamixel.latency import latency_timer_file, latency_timer_warning
from hardware.dynamixel.protocol import StatusError
from hardware.sim.servo import HeldJoint, VirtualServo
from hardware.sim.servo_chain import VirtualServoChain

MODELS = {1: "XM430-W350", 2: "XM430-W350", 3: "XM540-W270", 4: "XL430-W250"}
POSES = {1: 0.1, 2: -0.4, 3: 0.7, 4: -1.0}  # radians at the backend
IDS = tuple(MODELS)
OVERLOAD, OVERHEATING = 1 << 5, 1 << 2


def ticks(radians: float) -> int:
    return CENTER_TICK + round(radians * TICKS_PER_REV / (2 * math.pi))


@pytest.fixture
def chain() -> Iterator[VirtualServoChain]:
    servos = [VirtualServo(i, model_named(m), HeldJoint(POSES[i])) for i, m in MODELS.items()]
    with VirtualServoChain("bus-test", servos) as started:
        yield started


@pytest.fixture
def bus(chain: VirtualServoChain) -> Iterator[DynamixelBus]:
    with DynamixelBus(chain.port) as opened:
        yield opened


def fake_sysfs(root: Path, tty: str, value: str) -> Path:
    """A stand-in for /sys/bus/usb-serial/devices holding one adapter's latency timer."""
    path = root / tty / "latency_timer"
    path.parent.mkdir(parents=True)
    path.write_text(value + "\n")
    return path


# ---- opening the port ----------------------------------------------------------------------


def test_open_on_a_missing_port_says_which_port_and_what_to_do(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB7")
    with pytest.raises(PortNotFoundError) as caught:
        DynamixelBus(missing).open()
    assert caught.value.port == missing
    message = str(caught.value)
    assert missing in message
    assert "plugged in" in message
    assert "/dev/serial/by-id/" in message


def test_a_second_open_of_a_held_port_is_busy_until_the_first_closes(chain: VirtualServoChain) -> None:
    first = DynamixelBus(chain.port).open()
    try:
        with pytest.raises(PortBusyError) as caught:
            DynamixelBus(chain.port).open()
        assert caught.value.port == chain.port
        assert chain.port in str(caught.value)
        assert f"fuser -v {chain.port}" in str(caught.value)
        # The first holder is undisturbed.
        assert first.ping(1).model_number == 1020
    finally:
        first.close()
    with DynamixelBus(chain.port) as second:
        assert second.ping(1).servo_id == 1


# ---- discovery -----------------------------------------------------------------------------


def test_ping_returns_servo_info_with_model_name(bus: DynamixelBus) -> None:
    assert bus.ping(1) == ServoInfo(1, 1020, 48)
    assert bus.ping(1).model == "XM430-W350"
    assert bus.ping(3).model == "XM540-W270"
    assert bus.ping(4) == ServoInfo(4, 1060, 48)
    assert bus.ping(4).model == "XL430-W250"
    assert ServoInfo(9, 4242, 1).model is None


def test_ping_of_an_absent_id_times_out_naming_it(bus: DynamixelBus) -> None:
    with pytest.raises(ServoTimeoutError) as caught:
        bus.ping(9)
    assert caught.value.ids == (9,)
    assert "9" in str(caught.value)


def test_scan_finds_every_servo_in_id_order(bus: DynamixelBus) -> None:
    found = bus.scan()
    assert [info.servo_id for info in found] == list(IDS)
    assert [info.model for info in found] == [MODELS[i] for i in IDS]
    assert all(info.firmware == 48 for info in found)


# ---- items by name -------------------------------------------------------------------------


def test_read_and_write_items_by_name_with_signed_values(bus: DynamixelBus) -> None:
    assert bus.read(1, "present_position") == ticks(POSES[1])
    bus.write(1, "homing_offset", -700)
    assert bus.read(1, "homing_offset") == -700
    assert bus.read(1, "present_position") == ticks(POSES[1]) - 700
    # A position below zero reads negative, not as a large unsigned number.
    bus.write(2, "homing_offset", -3000)
    assert bus.read(2, "present_position") == ticks(POSES[2]) - 3000 < 0
    bus.write(1, "goal_pwm", -300)
    assert bus.read(1, "goal_pwm") == -300
    bus.write(1, "profile_velocity", 25_000)
    assert bus.read(1, "profile_velocity") == 25_000
    bus.write(1, "led", 1)
    assert bus.read(1, "led") == 1
    assert bus.read(4, "model_number") == 1060


def test_an_unknown_item_name_is_a_key_error_listing_the_known_ones(bus: DynamixelBus) -> None:
    with pytest.raises(KeyError, match="present_current"):
        bus.read(4, "present_current")  # an XL430 has present_load there
    assert bus.read(4, "present_load") == 0


def test_a_value_out_of_range_is_a_status_error(bus: DynamixelBus) -> None:
    with pytest.raises(ServoStatusError) as caught:
        bus.write(1, "led", 2)
    assert caught.value.code is StatusError.DATA_RANGE
    assert caught.value.servo_id == 1


def test_eeprom_write_with_torque_on_is_an_access_error(bus: DynamixelBus) -> None:
    bus.set_torque([1], True)
    with pytest.raises(ServoStatusError) as caught:
        bus.write(1, "operating_mode", OperatingMode.CURRENT_BASED_POSITION)
    assert caught.value.code is StatusError.ACCESS
    assert caught.value.servo_id == 1
    assert "operating_mode" in str(caught.value)
    assert bus.read(1, "operating_mode") == OperatingMode.POSITION
    assert bus.read(1, "torque_enable") == 1


def test_set_operating_mode_turns_torque_off_first(bus: DynamixelBus) -> None:
    bus.set_torque([1, 2], True)
    bus.set_operating_mode([1, 2], OperatingMode.CURRENT_BASED_POSITION)
    for servo_id in (1, 2):
        assert bus.read(servo_id, "operating_mode") == OperatingMode.CURRENT_BASED_POSITION
        assert bus.read(servo_id, "torque_enable") == 0


# ---- sync read and write -------------------------------------------------------------------


def test_sync_read_state_returns_int_arrays_in_the_order_of_ids(bus: DynamixelBus) -> None:
    order = (3, 1, 4, 2)
    state = bus.sync_read_state(order)
    assert state.ids == order
    for array in (state.position, state.velocity, state.current):
        assert array.shape == (4,)
        assert np.issubdtype(array.dtype, np.integer)
    np.testing.assert_array_equal(state.position, [ticks(POSES[i]) for i in order])
    np.testing.assert_array_equal(state.position, [bus.read(i, "present_position") for i in order])
    np.testing.assert_array_equal(state.velocity, 0)
    np.testing.assert_array_equal(state.current, 0)
    # Negative positions come out signed.
    bus.write(2, "homing_offset", -3000)
    assert bus.sync_read_state([2]).position[0] == ticks(POSES[2]) - 3000


def test_sync_write_goal_position_moves_the_servos(bus: DynamixelBus) -> None:
    bus.set_torque(IDS, True)
    goals = {1: 1000, 2: 3000, 3: 2048, 4: 4000}
    bus.sync_write_goal_position(goals)
    state = bus.sync_read_state(IDS)
    np.testing.assert_array_equal(state.position, [goals[i] for i in IDS])
    # Beyond the position limits a real servo in position mode ignores the goal (Data Limit Error,
    # which a sync write has no reply to carry).
    bus.sync_write_goal_position({1: 5000, 2: 2500})
    assert bus.read(1, "present_position") == 1000
    assert bus.read(2, "present_position") == 2500
    bus.sync_write_goal_position({})  # nothing to send is fine


# ---- faults --------------------------------------------------------------------------------


def test_a_dropped_servo_times_out_naming_exactly_it_and_answers_after_it_comes_back(
    chain: VirtualServoChain, bus: DynamixelBus
) -> None:
    chain.drop(3)
    with pytest.raises(ServoTimeoutError) as caught:
        bus.sync_read_state(IDS)
    assert caught.value.ids == (3,)
    assert "3" in str(caught.value)
    assert caught.value.port == chain.port
    with pytest.raises(ServoTimeoutError) as caught:
        bus.read(3, "present_position")
    assert caught.value.ids == (3,)
    # The others still answer while it is gone, and all of them once it is back.
    np.testing.assert_array_equal(
        bus.sync_read_state([1, 2, 4]).position, [ticks(POSES[i]) for i in (1, 2, 4)]
    )
    chain.drop(3, False)
    np.testing.assert_array_equal(bus.sync_read_state(IDS).position, [ticks(POSES[i]) for i in IDS])


def test_a_late_reply_times_out_on_the_wall_clock_but_not_on_the_chains_quiet_clock(
    chain: VirtualServoChain,
) -> None:
    """The twin's servos answer when their thread gets a CPU; on a loaded machine that can be later
    than the SDK waits. On the chain's quiet clock only time with nothing in flight counts."""
    expected = [ticks(POSES[i]) for i in IDS]
    chain.delay_replies(0.3)
    with DynamixelBus(chain.port) as wall_clock, pytest.raises(ServoTimeoutError):  # ~100 ms (conftest)
        wall_clock.sync_read_state(IDS)
    assert chain.settle()  # the late reply has gone out, to nobody
    chain.delay_replies(0.3, count=3)
    with DynamixelBus(chain.port, reply_clock=chain.quiet_time) as patient:
        for _ in range(2):
            np.testing.assert_array_equal(patient.sync_read_state(IDS).position, expected)
        assert patient.read(1, "present_position") == expected[0]
        chain.drop(3)  # a servo that does not answer is still noticed, after the SDK's wait
        started = time.monotonic()
        with pytest.raises(ServoTimeoutError) as caught:
            patient.sync_read_state(IDS)
        assert caught.value.ids == (3,) and time.monotonic() - started < 1.0


def test_two_dropped_servos_are_both_named(chain: VirtualServoChain, bus: DynamixelBus) -> None:
    chain.drop(1)
    chain.drop(4)
    with pytest.raises(ServoTimeoutError) as caught:
        bus.sync_read_state(IDS)
    assert caught.value.ids == (1, 4)


def test_a_corrupt_reply_is_a_corrupt_packet_error_with_the_id(
    chain: VirtualServoChain, bus: DynamixelBus
) -> None:
    chain.corrupt_replies(2)
    with pytest.raises(CorruptPacketError) as caught:
        bus.sync_read_state(IDS)
    assert caught.value.ids == (2,)
    assert "2" in str(caught.value)
    # One bad reply, then the bus is fine again.
    np.testing.assert_array_equal(bus.sync_read_state(IDS).position, [ticks(POSES[i]) for i in IDS])

    bus.ping(2)  # the model is known, so the read below is a single exchange
    chain.corrupt_replies(2)
    with pytest.raises(CorruptPacketError) as caught:
        bus.read(2, "present_position")
    assert caught.value.ids == (2,)
    assert bus.read(2, "present_position") == ticks(POSES[2])


def test_a_hardware_error_is_reported_in_words_for_sync_read_and_for_write(
    chain: VirtualServoChain, bus: DynamixelBus
) -> None:
    bus.ping(2)
    chain.locked(lambda: chain.servo(2).raise_hardware_error(OVERLOAD | OVERHEATING))

    with pytest.raises(ServoHardwareError) as caught:
        bus.sync_read_state(IDS)
    assert set(caught.value.faults) == {2}
    words = " ".join(caught.value.faults[2])
    assert "overload" in words
    assert "overheating" in words
    assert "reboot" in str(caught.value)

    with pytest.raises(ServoHardwareError) as caught:
        bus.write(2, "led", 1)
    assert set(caught.value.faults) == {2}
    assert any("overload" in w for w in caught.value.faults[2])
    assert any("overheating" in w for w in caught.value.faults[2])

    # Reading the status itself is allowed, and says what is latched.
    assert bus.read(2, "hardware_error_status") == OVERLOAD | OVERHEATING
    # The healthy servos are not blamed.
    np.testing.assert_array_equal(
        bus.sync_read_state([1, 3, 4]).position, [ticks(POSES[i]) for i in (1, 3, 4)]
    )


def test_reboot_clears_the_hardware_error(chain: VirtualServoChain, bus: DynamixelBus) -> None:
    bus.ping(2)
    bus.set_torque([2], True)
    chain.locked(lambda: chain.servo(2).raise_hardware_error(OVERLOAD))
    with pytest.raises(ServoHardwareError):
        bus.sync_read_state(IDS)
    bus.reboot(2)
    assert bus.read(2, "hardware_error_status") == 0
    assert bus.read(2, "torque_enable") == 0
    np.testing.assert_array_equal(bus.sync_read_state(IDS).position, [ticks(POSES[i]) for i in IDS])
    bus.set_torque([2], True)
    assert bus.read(2, "torque_enable") == 1


def test_every_bus_error_is_a_dynamixel_error(chain: VirtualServoChain, bus: DynamixelBus) -> None:
    chain.drop(1)
    with pytest.raises(DynamixelError):
        bus.sync_read_state(IDS)


def test_ping_of_a_servo_with_a_hardware_error_still_identifies_it(
    chain: VirtualServoChain, bus: DynamixelBus
) -> None:
    chain.locked(lambda: chain.servo(2).raise_hardware_error(OVERLOAD))
    assert bus.ping(2) == ServoInfo(2, 1020, 48)


def test_hardware_error_status_is_readable_by_name_before_any_ping(
    chain: VirtualServoChain, bus: DynamixelBus
) -> None:
    chain.locked(lambda: chain.servo(2).raise_hardware_error(OVERLOAD))
    assert bus.read(2, "hardware_error_status") == OVERLOAD


def test_hardware_error_status_is_readable_by_name_when_the_model_is_given(chain: VirtualServoChain) -> None:
    chain.locked(lambda: chain.servo(2).raise_hardware_error(OVERLOAD))
    with DynamixelBus(chain.port, motors={2: "XM430-W350"}) as bus:
        assert bus.read(2, "hardware_error_status") == OVERLOAD
        bus.reboot(2)
        assert bus.read(2, "hardware_error_status") == 0


# ---- FTDI latency timer --------------------------------------------------------------------


def test_latency_warning_is_none_for_a_pty(chain: VirtualServoChain, tmp_path: Path) -> None:
    assert latency_timer_warning(chain.port) is None
    assert latency_timer_warning(chain.port, sysfs=tmp_path) is None
    fake_sysfs(tmp_path, "ttyUSB0", "16")  # an adapter elsewhere does not concern this port
    assert latency_timer_warning(chain.port, sysfs=tmp_path) is None


def adapter_link(root: Path) -> str:
    """A /dev/serial/by-id style name that resolves to a path ending in ttyUSB0."""
    link = root / "dev" / "serial" / "by-id" / "usb-FTDI_USB__-__Serial_Converter_FT12345-if00-port0"
    link.parent.mkdir(parents=True)
    link.symlink_to(root / "dev" / "ttyUSB0")
    return str(link)


def test_latency_warning_is_none_at_1_ms(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    path = fake_sysfs(sysfs, "ttyUSB0", "1")
    port = adapter_link(tmp_path)
    assert latency_timer_file(port, sysfs) == path
    assert latency_timer_warning(port, sysfs) is None


def test_latency_warning_at_16_ms_gives_the_command_that_fixes_it(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    path = fake_sysfs(sysfs, "ttyUSB0", "16")
    port = adapter_link(tmp_path)
    warning = latency_timer_warning(port, sysfs)
    assert warning is not None
    assert f"echo 1 | sudo tee {path}" in warning
    assert "16 ms" in warning
    assert port in warning
    # The same adapter by its kernel name.
    kernel_name = str(tmp_path / "dev" / "ttyUSB0")
    by_kernel_name = latency_timer_warning(kernel_name, sysfs)
    assert by_kernel_name is not None
    assert by_kernel_name.startswith(kernel_name)
    assert f"echo 1 | sudo tee {path}" in by_kernel_name


@pytest.mark.parametrize(("value", "warns"), [("16", True), ("1", False)])
def test_open_sets_latency_warning_from_the_ports_latency_timer(
    chain: VirtualServoChain, tmp_path: Path, value: str, warns: bool
) -> None:
    tty = os.path.basename(os.path.realpath(chain.port))
    path = fake_sysfs(tmp_path, tty, value)
    with DynamixelBus(chain.port, sysfs=tmp_path) as bus:
        if warns:
            assert bus.latency_warning is not None
            assert f"echo 1 | sudo tee {path}" in bus.latency_warning
        else:
            assert bus.latency_warning is None
        assert bus.ping(1).servo_id == 1


def test_open_on_a_pty_has_no_latency_warning(bus: DynamixelBus) -> None:
    assert bus.latency_warning is None


def test_a_value_too_large_for_its_item_is_a_clear_error(bus: DynamixelBus) -> None:
    with pytest.raises(ValueError, match="led=300 does not fit"):
        bus.write(1, "led", 300)
