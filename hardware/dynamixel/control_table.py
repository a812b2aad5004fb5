"""Control tables of the Dynamixel X-series models an ALOHA rig uses (Protocol 2.0).

One shared X-series layout, with per-model differences applied as data: the XL430 has no current
items (address 126 is Present Load there), the others measure current in their own unit. Both the
bus (to read and write items by name) and the twin's virtual servos (to answer as real ones do) use
these tables, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

TICKS_PER_REV = 4096
CENTER_TICK = 2048
VELOCITY_UNIT_RPM = 0.229
# The units in radians, for the calibration (a real servo) and the twin's servos (a virtual one) alike.
RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
RAD_S_PER_UNIT = VELOCITY_UNIT_RPM * 2 * math.pi / 60


@dataclass(frozen=True)
class Item:
    """One control-table entry. `eeprom` items are writable only while torque is off."""

    address: int
    size: int
    writable: bool = True
    eeprom: bool = False
    signed: bool = False
    low: int | None = None
    high: int | None = None

    def clamp_range(self) -> tuple[int, int]:
        """The values this item can hold at all, from its size and sign."""
        bits = 8 * self.size
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)


def _x_series_items() -> dict[str, Item]:
    ro, ee = False, True
    return {
        # EEPROM area
        "model_number": Item(0, 2, writable=ro, eeprom=ee),
        "model_information": Item(2, 4, writable=ro, eeprom=ee),
        "firmware_version": Item(6, 1, writable=ro, eeprom=ee),
        "id": Item(7, 1, eeprom=ee, low=0, high=252),
        "baud_rate": Item(8, 1, eeprom=ee, low=0, high=7),
        "return_delay_time": Item(9, 1, eeprom=ee, low=0, high=254),
        "drive_mode": Item(10, 1, eeprom=ee, low=0, high=13),
        "operating_mode": Item(11, 1, eeprom=ee, low=0, high=16),
        "secondary_id": Item(12, 1, eeprom=ee, low=0, high=255),
        "protocol_type": Item(13, 1, eeprom=ee, low=1, high=22),
        "homing_offset": Item(20, 4, eeprom=ee, signed=True, low=-1_044_479, high=1_044_479),
        "moving_threshold": Item(24, 4, eeprom=ee, low=0, high=1023),
        "temperature_limit": Item(31, 1, eeprom=ee, low=0, high=100),
        "max_voltage_limit": Item(32, 2, eeprom=ee, low=60, high=160),
        "min_voltage_limit": Item(34, 2, eeprom=ee, low=60, high=160),
        "pwm_limit": Item(36, 2, eeprom=ee, low=0, high=885),
        "current_limit": Item(38, 2, eeprom=ee, low=0, high=2047),
        "velocity_limit": Item(44, 4, eeprom=ee, low=0, high=1023),
        "max_position_limit": Item(48, 4, eeprom=ee, low=0, high=4095),
        "min_position_limit": Item(52, 4, eeprom=ee, low=0, high=4095),
        "startup_configuration": Item(60, 1, eeprom=ee, low=0, high=3),
        "shutdown": Item(63, 1, eeprom=ee, low=0, high=255),
        # RAM area
        "torque_enable": Item(64, 1, low=0, high=1),
        "led": Item(65, 1, low=0, high=1),
        "status_return_level": Item(68, 1, low=0, high=2),
        "registered_instruction": Item(69, 1, writable=ro),
        "hardware_error_status": Item(70, 1, writable=ro),
        "velocity_i_gain": Item(76, 2, low=0, high=16383),
        "velocity_p_gain": Item(78, 2, low=0, high=16383),
        "position_d_gain": Item(80, 2, low=0, high=16383),
        "position_i_gain": Item(82, 2, low=0, high=16383),
        "position_p_gain": Item(84, 2, low=0, high=16383),
        "feedforward_2nd_gain": Item(88, 2, low=0, high=16383),
        "feedforward_1st_gain": Item(90, 2, low=0, high=16383),
        "bus_watchdog": Item(98, 1, low=0, high=127),
        "goal_pwm": Item(100, 2, signed=True, low=-885, high=885),
        "goal_current": Item(102, 2, signed=True, low=-2047, high=2047),
        "goal_velocity": Item(104, 4, signed=True, low=-1023, high=1023),
        "profile_acceleration": Item(108, 4, low=0, high=32767),
        "profile_velocity": Item(112, 4, low=0, high=32767),
        "goal_position": Item(116, 4, signed=True),
        "realtime_tick": Item(120, 2, writable=ro),
        "moving": Item(122, 1, writable=ro),
        "moving_status": Item(123, 1, writable=ro),
        "present_pwm": Item(124, 2, writable=ro, signed=True),
        "present_current": Item(126, 2, writable=ro, signed=True),
        "present_velocity": Item(128, 4, writable=ro, signed=True),
        "present_position": Item(132, 4, writable=ro, signed=True),
        "velocity_trajectory": Item(136, 4, writable=ro, signed=True),
        "position_trajectory": Item(140, 4, writable=ro, signed=True),
        "present_input_voltage": Item(144, 2, writable=ro),
        "present_temperature": Item(146, 1, writable=ro),
        "backup_ready": Item(147, 1, writable=ro),
    }


# The layout every model shares before its differences: what the bus reads before it knows a model.
X_SERIES_ITEMS: Mapping[str, Item] = MappingProxyType(_x_series_items())
# The 50 Hz sync read: Present Current (or Load) 126..127, Velocity 128..131, Position 132..135.
SYNC_STATE_ADDRESS = X_SERIES_ITEMS["present_current"].address
_LAST_STATE = X_SERIES_ITEMS["present_position"]
SYNC_STATE_LENGTH = _LAST_STATE.address + _LAST_STATE.size - SYNC_STATE_ADDRESS


@dataclass(frozen=True)
class MotorModel:
    """A servo model: its number on the bus, its control table and the units of its current feedback."""

    name: str
    number: int
    items: Mapping[str, Item]
    current_unit_ma: float | None  # None: the model reports load (0.1 % of stall torque), not current
    stall_torque_nm: float
    stall_current_a: float
    default_firmware: int = 48
    memory_size: int = field(default=148)

    def item(self, name: str) -> Item:
        try:
            return self.items[name]
        except KeyError:
            raise KeyError(
                f"{self.name} has no control-table item {name!r}; "
                f"known items: {', '.join(sorted(self.items))}"
            ) from None

    def item_at(self, address: int) -> tuple[str, Item] | None:
        """The item that starts at `address`, if any."""
        for name, item in self.items.items():
            if item.address == address:
                return name, item
        return None

    @property
    def torque_constant_nm_per_a(self) -> float:
        return self.stall_torque_nm / self.stall_current_a


def _model(
    name: str,
    number: int,
    current_unit_ma: float | None,
    stall_torque_nm: float,
    stall_current_a: float,
    drop: tuple[str, ...] = (),
    rename: Mapping[str, str] | None = None,
) -> MotorModel:
    items = {k: v for k, v in _x_series_items().items() if k not in drop}
    for old, new in (rename or {}).items():
        items[new] = items.pop(old)
    return MotorModel(
        name=name,
        number=number,
        items=MappingProxyType(items),
        current_unit_ma=current_unit_ma,
        stall_torque_nm=stall_torque_nm,
        stall_current_a=stall_current_a,
    )


MODELS: Mapping[str, MotorModel] = MappingProxyType(
    {
        m.name: m
        for m in (
            _model("XM430-W350", 1020, 2.69, 4.1, 2.3),
            _model("XM540-W270", 1120, 2.69, 10.6, 4.4),
            _model(
                "XL430-W250",
                1060,
                None,
                1.5,
                1.4,
                drop=("current_limit", "goal_current"),
                rename={"present_current": "present_load"},
            ),
            _model("XL330-M288", 1200, 1.0, 0.52, 1.47),
        )
    }
)
MODELS_BY_NUMBER: Mapping[int, MotorModel] = MappingProxyType({m.number: m for m in MODELS.values()})


def model_named(name: str) -> MotorModel:
    """The model called `name` (case-insensitive), or a KeyError listing the supported ones."""
    for model in MODELS.values():
        if model.name.lower() == name.lower():
            return model
    raise KeyError(f"unknown Dynamixel model {name!r}; supported: {', '.join(MODELS)}")


class OperatingMode:
    """Values of the Operating Mode item (address 11)."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


# Hardware Error Status (address 70): bit -> words an operator understands.
HARDWARE_ERROR_BITS: Mapping[int, str] = MappingProxyType(
    {
        0: "input voltage out of range",
        2: "overheating",
        3: "motor encoder error",
        4: "electrical shock (motor or circuit)",
        5: "overload (torque above the limit for too long)",
    }
)


def decode_hardware_error(status: int) -> list[str]:
    """The faults set in a Hardware Error Status byte, in words."""
    return [words for bit, words in HARDWARE_ERROR_BITS.items() if status & (1 << bit)]
