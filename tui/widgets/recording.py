"""What is being recorded right now and how long it has run, so the operator knows when to stop."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import RigState


class RecordingPanel(Widget):
    """`● REC ep 12  4.2 / 10.0 s` while recording, else the count of episodes in the store and the
    newest event (what the last command did)."""

    state: reactive[RigState | None] = reactive(None)

    def render(self) -> Text:
        state = self.state
        if state is None:
            return Text("")
        recording = state.recording
        if recording is None:
            text = Text.assemble(("○ not recording", "dim"), f"  {state.episodes_in_store} episodes")
        else:
            planned = f" / {recording.planned_s:.1f}" if recording.planned_s else ""
            text = Text.assemble(
                ("● REC", "bold red"),
                f" ep {recording.episode_id}  ",
                (f"{recording.elapsed_s:5.1f}{planned} s", "bold"),
                f"  {state.episodes_in_store} in store",
            )
        if state.events:
            text.append(f"  {state.events[-1].strip()}", style="italic")
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text
