"""Servo backends that tie virtual servos to the MuJoCo world's joints.

A follower servo's goal becomes a position target of the simulated joint, and its present state is
read from the simulation. The gripper servo turns an angle; the simulated gripper slides two
fingers, so its backend maps the profile's [closed, open] angles onto the model's finger travel.
A shadow motor (the second motor of a ViperX shoulder or elbow) is mounted mirrored: it reports the
primary joint's motion reversed, and its own goal is ignored because its Secondary ID makes it
follow the primary.
"""

from __future__ import annotations

from hardware.sim.servo import ServoBackend
from hardware.sim.world import World

GRIPPER_INDEX = 6


class SimulatedJoint:
    """A revolute joint of a follower arm in the world.

    The MJCF's actuators are not servos: they carry large friction losses and force ranges (a
    shoulder may push 300 N·m). `torque_scale` maps the actuator's force range onto the motor's
    stall torque (shared between a primary and its shadow), so reported currents keep their
    proportions and an overload means what it would on the real arm.
    """

    def __init__(self, world: World, side: str, index: int, torque_scale: float = 1.0) -> None:
        self._world, self._side, self._index = world, side, index
        self._torque_scale = torque_scale

    def read(self) -> tuple[float, float, float]:
        state = self._world.joint_state(self._side)
        i = self._index
        return float(state.position[i]), float(state.velocity[i]), float(state.effort[i]) * self._torque_scale

    def set_goal(self, radians: float) -> None:
        self._world.set_target(self._side, self._index, radians)

    def set_torque(self, enabled: bool) -> None:
        self._world.set_torque(self._side, self._index, enabled)


class SimulatedGripper:
    """The follower gripper: servo angle in [closed, open] <-> finger opening in the model's range."""

    LEVER_M = 0.02  # finger force (N) to servo torque (N·m): roughly the crank radius of the ViperX gripper

    def __init__(self, world: World, side: str, closed_rad: float, open_rad: float) -> None:
        self._world, self._side = world, side
        self._closed_rad, self._open_rad = closed_rad, open_rad
        self._closed_m, self._open_m = world.gripper_range()

    def _scale(self) -> float:
        return (self._open_m - self._closed_m) / (self._open_rad - self._closed_rad)

    def read(self) -> tuple[float, float, float]:
        state = self._world.joint_state(self._side)
        opening = float(state.position[GRIPPER_INDEX])
        radians = self._closed_rad + (opening - self._closed_m) / self._scale()
        velocity = float(state.velocity[GRIPPER_INDEX]) / self._scale()
        return radians, velocity, float(state.effort[GRIPPER_INDEX]) * self.LEVER_M

    def set_goal(self, radians: float) -> None:
        opening = self._closed_m + (radians - self._closed_rad) * self._scale()
        self._world.set_target(self._side, GRIPPER_INDEX, opening)

    def set_torque(self, enabled: bool) -> None:
        self._world.set_torque(self._side, GRIPPER_INDEX, enabled)


class MirroredShadow:
    """A shadow motor: the primary's motion, reversed; its own commands have no effect."""

    def __init__(self, primary: ServoBackend) -> None:
        self._primary = primary

    def read(self) -> tuple[float, float, float]:
        position, velocity, torque = self._primary.read()
        return -position, -velocity, -torque

    def set_goal(self, radians: float) -> None:
        pass

    def set_torque(self, enabled: bool) -> None:
        pass
