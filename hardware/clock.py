"""The rig's clock. The loop schedules on `now()` and waits with `sleep_until()`; on real hardware
that is the monotonic wall clock, on the twin it is simulated time, which in lock-step mode is
advanced by the very wait: the loop's pause is when physics and cameras run."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock."""
        ...

    def sleep_until(self, t: float) -> None:
        """Return once now() >= t (at once if it already is)."""
        ...


class WallClock:
    """time.monotonic, with a sleep that wakes close to the deadline rather than 'about' then."""

    def __init__(self, spin_s: float = 0.0005) -> None:
        self._spin_s = spin_s

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > self._spin_s:
            time.sleep(remaining - self._spin_s)
        while time.monotonic() < t:
            pass
