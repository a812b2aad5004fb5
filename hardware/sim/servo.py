"""A virtual Dynamixel X-series servo: its control-table memory and the rules a real one enforces.

The servo knows nothing of MuJoCo: a `ServoBackend` tells it the motor's angle, speed and torque and
takes its goal and torque state. The rules are the real servo's (ROBOTIS e-manual, X-series, Protocol
2.0): EEPROM items refuse writes while torque is on (Access Error), read-only items refuse all writes
(Access Error), a value outside an item's range is refused (Data Range Error), and so is a goal beyond
the limit the control table sets for it (Data Limit Error: goal position outside the position limits
in position mode, goal velocity / current / PWM beyond their limits); a refused write changes
nothing. Homing offset and drive mode (reverse) apply to what the servo reports; a hardware error
turns torque off and raises the alert bit until a reboot. REG_WRITE keeps a checked write for ACTION.
"""

from __future__ import annotations

import time
from typing import Protocol

from hardware.dynamixel.control_table import (
    CENTER_TICK,
    RAD_PER_TICK,
    RAD_S_PER_UNIT,
    Item,
    MotorModel,
    OperatingMode,
)
from hardware.dynamixel.protocol import ALERT_BIT, StatusError

MULTI_TURN_MODES = (OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION)
MULTI_TURN_GOAL = 1_048_575  # goal position range in the multi-turn modes: ±256 turns
# Goals bounded by another item (e-manual: their range is ± that limit); beyond it: Data Limit Error.
LIMITED_BY = {"goal_pwm": "pwm_limit", "goal_current": "current_limit", "goal_velocity": "velocity_limit"}

Update = tuple[str, Item, int]


class ServoBackend(Protocol):
    """What moves the servo's output shaft: a simulated joint, or whoever moves a leader arm."""

    def read(self) -> tuple[float, float, float]:
        """Motor angle (rad, 0 at the centre tick), velocity (rad/s) and torque (N·m)."""
        ...

    def set_goal(self, radians: float) -> None: ...

    def set_torque(self, enabled: bool) -> None: ...


class HeldJoint:
    """A backend for a joint nobody simulates: it stays where it is put, and goes to its goal under torque.

    Leader arms use it (their pose is set by the operator), and so do tests that need a servo
    without physics.
    """

    def __init__(self, radians: float = 0.0) -> None:
        self.position = radians
        self.torque = False

    def read(self) -> tuple[float, float, float]:
        return self.position, 0.0, 0.0

    def set_goal(self, radians: float) -> None:
        if self.torque:
            self.position = radians

    def set_torque(self, enabled: bool) -> None:
        self.torque = enabled


class VirtualServo:
    """One servo's memory and behaviour. Not thread-safe: its chain serialises access."""

    def __init__(self, servo_id: int, model: MotorModel, backend: ServoBackend, firmware: int | None = None):
        self.model = model
        self.backend = backend
        self.memory = bytearray(model.memory_size)
        self._firmware = model.default_firmware if firmware is None else firmware
        self._boot = time.monotonic()
        self._registered: tuple[int, bytes] | None = None  # a REG_WRITE waiting for ACTION
        self._factory_defaults(servo_id)
        self._reset_ram()

    # ---- identity -------------------------------------------------------------------------
    @property
    def servo_id(self) -> int:
        return self.memory[self.model.item("id").address]

    def get(self, name: str) -> int:
        return self._get(self.model.item(name))

    def set(self, name: str, value: int) -> None:
        """Set an item directly, bypassing the rules (factory settings, tests)."""
        self._put(self.model.item(name), value)

    # ---- faults ----------------------------------------------------------------------------
    def raise_hardware_error(self, bits: int) -> None:
        """Latch hardware-error bits (address 70); like a real servo, torque goes off until reboot."""
        self.set("hardware_error_status", self.get("hardware_error_status") | bits)
        self._torque(False)

    @property
    def error_byte(self) -> int:
        """The alert flag that every status packet carries while a hardware error is latched."""
        return ALERT_BIT if self.get("hardware_error_status") else 0

    # ---- instructions ----------------------------------------------------------------------
    def read(self, address: int, length: int) -> tuple[StatusError, bytes]:
        if address < 0 or length < 1 or address + length > len(self.memory):
            return StatusError.DATA_RANGE, b""
        self._refresh_feedback()
        return StatusError.NONE, bytes(self.memory[address : address + length])

    def write(self, address: int, data: bytes) -> StatusError:
        """Apply a WRITE as a real servo does: all items checked first, then all written."""
        error, updates = self.check_write(address, data)
        if error is StatusError.NONE:
            for name, item, raw in updates:
                self._apply(name, item, raw)
        return error

    def check_write(self, address: int, data: bytes) -> tuple[StatusError, list[Update]]:
        """What a WRITE of `data` at `address` would change, or why it is refused."""
        updates: list[Update] = []
        offset = 0
        while offset < len(data):
            found = self.model.item_at(address + offset)
            if found is None:
                return StatusError.ACCESS, []
            name, item = found
            if offset + item.size > len(data):
                return StatusError.DATA_LENGTH, []
            raw = int.from_bytes(data[offset : offset + item.size], "little", signed=item.signed)
            error = self._check_write(name, item, raw)
            if error is not StatusError.NONE:
                return error, []
            updates.append((name, item, raw))
            offset += item.size
        return StatusError.NONE, updates

    def register(self, address: int, data: bytes) -> StatusError:
        """REG_WRITE: check the write now, keep it for ACTION (Registered Instruction reads 1)."""
        error, _ = self.check_write(address, data)
        if error is StatusError.NONE:
            self._registered = (address, bytes(data))
            self.set("registered_instruction", 1)
        return error

    def action(self) -> StatusError:
        """ACTION: run the registered write (checked again: the state may have changed since);
        Instruction Error when nothing was registered, as the e-manual says."""
        if self._registered is None:
            return StatusError.INSTRUCTION
        (address, data), self._registered = self._registered, None
        self.set("registered_instruction", 0)
        return self.write(address, data)

    def reboot(self) -> None:
        """RAM back to defaults: torque off, hardware error cleared, goal at the present position,
        nothing registered."""
        self._reset_ram()

    # ---- internals -------------------------------------------------------------------------
    def _check_write(self, name: str, item: Item, value: int) -> StatusError:
        if not item.writable:
            return StatusError.ACCESS
        if item.eeprom and self.get("torque_enable"):
            return StatusError.ACCESS
        if (item.low is not None and value < item.low) or (item.high is not None and value > item.high):
            return StatusError.DATA_RANGE
        if name == "goal_position":
            return self._check_goal_position(value)
        limit = LIMITED_BY.get(name)
        if limit is not None and limit in self.model.items and abs(value) > self.get(limit):
            return StatusError.DATA_LIMIT
        return StatusError.NONE

    def _check_goal_position(self, value: int) -> StatusError:
        mode = self.get("operating_mode")
        if mode == OperatingMode.POSITION:
            low, high = self.get("min_position_limit"), self.get("max_position_limit")
            return StatusError.NONE if low <= value <= high else StatusError.DATA_LIMIT
        if mode in MULTI_TURN_MODES and abs(value) > MULTI_TURN_GOAL:
            return StatusError.DATA_RANGE
        return StatusError.NONE

    def _apply(self, name: str, item: Item, value: int) -> None:
        if name == "goal_position":
            self._put(item, value)
            self.backend.set_goal(self._ticks_to_motor_radians(value))
        elif name == "torque_enable":
            self._torque(bool(value))
        else:
            self._put(item, value)

    def _torque(self, enabled: bool) -> None:
        if enabled and self.get("hardware_error_status"):
            return  # a latched hardware error keeps torque off until reboot
        self._put(self.model.item("torque_enable"), int(enabled))
        self.backend.set_torque(enabled)
        if enabled:
            self.backend.set_goal(self._ticks_to_motor_radians(self.get("goal_position")))

    def _sign(self) -> int:
        return -1 if self.get("drive_mode") & 1 else 1

    def _motor_radians_to_ticks(self, radians: float) -> int:
        raw = round(radians / RAD_PER_TICK)
        return CENTER_TICK + self._sign() * raw + self.get("homing_offset")

    def _ticks_to_motor_radians(self, ticks: int) -> float:
        raw = self._sign() * (ticks - CENTER_TICK - self.get("homing_offset"))
        return raw * RAD_PER_TICK

    def _refresh_feedback(self) -> None:
        position, velocity, torque = self.backend.read()
        # A servo cannot deliver more than its stall torque, whatever the simulated actuator asks for.
        torque = max(-self.model.stall_torque_nm, min(self.model.stall_torque_nm, torque))
        sign = self._sign()
        self.set("present_position", self._motor_radians_to_ticks(position))
        self.set("present_velocity", sign * round(velocity / RAD_S_PER_UNIT))
        if self.model.current_unit_ma is None:
            load = round(1000 * torque / self.model.stall_torque_nm)
            self.set("present_load", max(-1000, min(1000, sign * load)))
        else:
            amps = torque / self.model.torque_constant_nm_per_a
            self.set("present_current", sign * round(1000 * amps / self.model.current_unit_ma))
        self.set("moving", int(abs(velocity) > 0.02))
        self.set("realtime_tick", int((time.monotonic() - self._boot) * 1000) % 32768)

    def _factory_defaults(self, servo_id: int) -> None:
        defaults = {
            "model_number": self.model.number,
            "firmware_version": self._firmware,
            "id": servo_id,
            "baud_rate": 3,  # 1 Mbps
            "return_delay_time": 0,
            "operating_mode": OperatingMode.POSITION,
            "secondary_id": 255,
            "protocol_type": 2,
            "moving_threshold": 10,
            "temperature_limit": 80,
            "max_voltage_limit": 160,
            "min_voltage_limit": 95,
            "pwm_limit": 885,
            "velocity_limit": 200,
            "max_position_limit": 4095,
            "min_position_limit": 0,
            "shutdown": 52,  # overheating, electrical shock, overload
        }
        if "current_limit" in self.model.items:
            defaults["current_limit"] = 1193
        for name, value in defaults.items():
            self.set(name, value)

    def _reset_ram(self) -> None:
        ram = {
            "torque_enable": 0,
            "led": 0,
            "status_return_level": 2,
            "hardware_error_status": 0,
            "velocity_i_gain": 1920,
            "velocity_p_gain": 100,
            "position_p_gain": 800,
            "profile_velocity": 0,
            "present_input_voltage": 120,
            "present_temperature": 35,
            "registered_instruction": 0,
        }
        self._registered = None
        for name, value in ram.items():
            self.set(name, value)
        self.backend.set_torque(False)
        self._refresh_feedback()
        self.set("goal_position", self.get("present_position"))

    def _get(self, item: Item) -> int:
        return int.from_bytes(
            self.memory[item.address : item.address + item.size], "little", signed=item.signed
        )

    def _put(self, item: Item, value: int) -> None:
        low, high = item.clamp_range()
        value = min(max(int(value), low), high)
        self.memory[item.address : item.address + item.size] = value.to_bytes(
            item.size, "little", signed=item.signed
        )
