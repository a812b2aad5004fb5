"""One arm's joints as horizontal bars, so the operator sees a joint near its limit before it gets there."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import RigState

EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int) -> str:
    """A bar `width` cells wide, filled to `fraction` with eighth-cell resolution."""
    eighths = round(min(max(fraction, 0.0), 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (EIGHTHS[part] if part else "")
    return text.ljust(width, " ")


class ArmBars(Widget):
    """The followers' joint positions of one arm (the joints named `<side>.…`) within their ranges; the
    leader's position is the yellow mark, so a follower lagging its leader shows as a gap."""

    state: reactive[RigState | None] = reactive(None)

    def __init__(self, side: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.side = side
        self.border_title = side

    def render(self) -> Text:
        state = self.state
        if state is None or state.qpos is None:
            return Text("no joint positions", style="dim")
        rows = [i for i, name in enumerate(state.joint_names) if name.split(".")[0] == self.side]
        label_width = max((len(state.joint_names[i].split(".", 1)[-1]) for i in rows), default=0)
        bar_width = max(self.content_size.width - label_width - 8, 4)
        lines = []
        for i in rows:
            lo, hi, q = float(state.lower[i]), float(state.upper[i]), float(state.qpos[i])
            span = hi - lo if hi > lo else 1.0
            line = Text(state.joint_names[i].split(".", 1)[-1].ljust(label_width) + " ")
            cells = list(bar((q - lo) / span, bar_width))
            mark = None
            if state.leader is not None and np.isfinite(state.leader[i]):
                mark = min(max(int((float(state.leader[i]) - lo) / span * bar_width), 0), bar_width - 1)
                cells[mark] = "│" if cells[mark] == " " else cells[mark]
            cells_text = Text("".join(cells), style="green on grey23")
            if mark is not None:
                cells_text.stylize("bold yellow", mark, mark + 1)
            line.append_text(cells_text)
            line.append(f"{q:+7.2f}", style="bold red" if not lo <= q <= hi else "")
            lines.append(line)
        text = Text("\n").join(lines)
        text.no_wrap = True
        return text
