"""Safety between a mode and the servos: joint limits, a per-tick velocity clamp, overload
monitoring. Each finding is reported in words naming the arm and joint, so the operator knows
what tripped; nothing is clamped silently."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rig.step import GRIPPER, JOINTS_PER_ARM


@dataclass(frozen=True)
class SafetyConfig:
    max_joint_speed: float = 3.0  # rad/s a goal may move; 0.06 rad per tick at 50 Hz
    max_gripper_speed: float = 5.0  # openings/s
    overload_fraction: float = 0.9  # of each motor's stall current: sustained, that is an overload
    overload_s: float = 2.0  # how long above it before it trips (moves and grasps peak briefly)
    watchdog_ticks: int = 5  # ticks without an action before the mode is replaced by hold
    report_margin: float = 1e-3  # clamps smaller than this are not worth a report


class Safety:
    """Limits a goal against joint ranges and speed, and watches motor currents."""

    def __init__(
        self,
        config: SafetyConfig,
        names: Sequence[str],
        lower: np.ndarray,
        upper: np.ndarray,
        stall_current_ma: np.ndarray,
        dt: float,
    ) -> None:
        self.config = config
        self._names = list(names)  # "follower_left.elbow", one per element of the 14-vector
        self._lower, self._upper = lower, upper
        self._current_limit = config.overload_fraction * stall_current_ma
        speed = np.full(len(names), config.max_joint_speed)
        speed[GRIPPER::JOINTS_PER_ARM] = config.max_gripper_speed
        self._max_step = speed * dt
        self._overload_ticks = max(1, round(config.overload_s / dt))
        self._above = np.zeros(len(names), dtype=np.int64)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The followers' joint ranges (lower, upper), e.g. to reject a policy's out-of-range chunk."""
        return self._lower.copy(), self._upper.copy()

    def limit(self, goal: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The goal within joint ranges and at most one speed-limited step from the previous goal."""
        events = []
        bounded = np.clip(goal, self._lower, self._upper)
        margin = self.config.report_margin
        for i in np.flatnonzero(np.abs(bounded - goal) > margin):
            events.append(f"limit: {self._names[i]} {goal[i]:+.3f} -> {bounded[i]:+.3f}")
        step = np.clip(bounded - previous, -self._max_step, self._max_step)
        limited = previous + step
        for i in np.flatnonzero(np.abs(limited - bounded) > margin):
            events.append(f"speed: {self._names[i]} held to {self._max_step[i]:.3f} per tick")
        return limited, events

    def overloads(self, effort: np.ndarray) -> list[str]:
        """Joints whose current has stayed above the limit for `overload_s` (reported once, as it trips)."""
        above = np.abs(effort) > self._current_limit
        self._above = np.where(above, self._above + 1, 0)
        tripped = np.flatnonzero(self._above == self._overload_ticks)
        seconds = self.config.overload_s
        return [f"overload: {self._names[i]} at {effort[i]:.0f} mA for {seconds:.1f} s" for i in tripped]
