"""The rig's events as a person reads them: an event the loop repeats every tick (a speed clamp, the
e-stop holding) is one line with a count, not fifty lines a second pushing every other event away."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
RECENT = 16  # a repeat is looked for among this many newest lines (several joints clamp in turn)


def event_kind(event: str) -> str:
    """The event's words without its numbers: `limit: waist +1.2 -> +1.0` repeats whatever the values."""
    return NUMBER.sub("#", event)


@dataclass
class EventLine:
    t: float  # rig-clock seconds of the first occurrence
    text: str  # the latest occurrence's words
    count: int = 1
    last_t: float = 0.0

    def describe(self) -> str:
        repeats = f"  ×{self.count} until {self.last_t:.2f} s" if self.count > 1 else ""
        return f"{self.t:8.2f} s  {self.text}{repeats}"


@dataclass
class EventLog:
    """Newest last; a repeat of a recent line counts on that line and moves it to the end."""

    kept: int = 200
    lines: collections.deque[EventLine] = field(default_factory=collections.deque)

    def add(self, t: float, event: str) -> bool:
        """Log `event`; True when it is new (not a repeat of a recent line)."""
        kind = event_kind(event)
        recent = list(self.lines)[-RECENT:]
        for line in reversed(recent):
            if event_kind(line.text) == kind:
                self.lines.remove(line)
                line.count, line.last_t, line.text = line.count + 1, t, event
                self.lines.append(line)
                return False
        self.lines.append(EventLine(t, event, last_t=t))
        while len(self.lines) > self.kept:
            self.lines.popleft()
        return True

    def describe(self) -> list[str]:
        return [line.describe() for line in self.lines]


@dataclass
class RepeatSummary:
    """For a stream that cannot redraw (`rig run` on a terminal or in a log): each event's first
    occurrence is printed, its repeats are counted and summed up now and then."""

    unreported: collections.Counter[str] = field(default_factory=collections.Counter)
    latest: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def first(self, event: str) -> bool:
        """True when `event` should be printed now; False when it only counts as a repeat."""
        kind = event_kind(event)
        if kind not in self.seen:
            self.seen.add(kind)
            return True
        self.unreported[kind] += 1
        self.latest[kind] = event
        return False

    def summary(self, seconds: float) -> list[str]:
        """One line per event repeated since the last summary; an event that went quiet meanwhile is
        printed again the next time it happens."""
        lines = [f"{self.latest[kind]} (×{n} in {seconds:.0f} s)" for kind, n in self.unreported.items()]
        self.seen = set(self.unreported)
        self.unreported.clear()
        return lines
