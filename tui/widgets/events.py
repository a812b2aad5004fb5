"""The rig's recent events, newest last: what a command did, why the policy was rejected, a fault."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

ALARMS = ("lost", "e-stop", "fault", "rejected", "watchdog", "error", "not answering")


class EventLog(Widget):
    """As many of the newest events as fit; alarming ones in red."""

    events: reactive[tuple[str, ...]] = reactive(())

    def render(self) -> Text:
        shown = self.events[-max(self.content_size.height, 1) :]
        lines = [Text(event, style="red" if any(a in event for a in ALARMS) else "") for event in shown]
        text = Text("\n").join(lines)
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text
