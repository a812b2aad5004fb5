"""Which screen this is and how to reach the others: the app's F-keys as a row of tabs."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SCREENS = (
    ("f1", "record", "Record"),
    ("f2", "episodes", "Episodes"),
    ("f3", "train", "Train"),
    ("f4", "run", "Run"),
)


class ScreenTabs(Widget):
    """`F1 Record  F2 Episodes  F3 Train  F4 Run` with the current one highlighted, and the e-stop keys
    at the right, so the footer is left to the screen's own keys."""

    current: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text()
        for key, mode, title in SCREENS:
            style = "bold reverse" if mode == self.current else "dim"
            text.append(f" {key.upper()} {title} ", style=style)
            text.append(" ")
        hint = Text(" space/^E E-STOP ", style="bold white on red")
        text.append(" " * max(self.content_size.width - text.cell_len - hint.cell_len, 1))
        text.append_text(hint)
        text.no_wrap = True
        text.overflow = "crop"
        return text
