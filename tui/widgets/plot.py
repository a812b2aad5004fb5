"""A line plot drawn in braille characters: 2×4 dots a cell, so a terminal shows a usable curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual.widget import Widget

# The bit of each dot in a braille cell, by (column, row) within the cell (Unicode's dot numbering).
_DOT_BITS = np.array([[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]], np.int64)
_BRAILLE = 0x2800
_GUTTER = 8  # characters for the y-axis labels


@dataclass(frozen=True, eq=False)
class Series:
    """One curve: y over x (x increasing), in a Rich style."""

    label: str
    x: np.ndarray
    y: np.ndarray
    style: str = "cyan"


def _pixels(
    series: Series, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float]
) -> np.ndarray:
    """The dots of one curve on a `height` × `width` dot grid, interpolated per dot column and joined
    vertically so steep segments stay connected."""
    dots = np.zeros((height, width), bool)
    x, y = np.asarray(series.x, float), np.asarray(series.y, float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if not len(x):
        return dots
    (x0, x1), (y0, y1) = x_range, y_range
    columns = np.arange(width)
    xs = x0 + (x1 - x0) * columns / max(width - 1, 1)
    if len(x) == 1:  # a single point: the dot column nearest it
        xs = np.where(columns == np.argmin(np.abs(xs - x[0])), x[0], np.nan)
    inside = (xs >= x[0]) & (xs <= x[-1])
    ys = np.interp(np.nan_to_num(xs), x, y)
    rows = np.clip(np.round((y1 - ys) / max(y1 - y0, 1e-12) * (height - 1)), 0, height - 1).astype(int)
    previous: int | None = None
    for column in columns[inside]:
        row = int(rows[column])
        low, high = (row, row) if previous is None else (min(row, previous), max(row, previous))
        dots[low : high + 1, column] = True
        previous = row
    return dots


def render_plot(series: Sequence[Series], width: int, height: int, title: str = "") -> Text:
    """The plot as text of `width` × `height` cells: a title line with the legend, then the curves with
    the y range on the left."""
    head = Text(title + ("  " if title else ""), style="bold", no_wrap=True)
    for s in series:
        head.append("━ ", style=s.style).append(s.label + "  ")
    head.truncate(width, overflow="ellipsis")  # one line, whatever the width
    rows, columns = max(height - 1, 1), max(width - _GUTTER, 1)
    drawn = [s for s in series if np.isfinite(np.asarray(s.y, float)).any()]
    if not drawn:
        return head.append("\n" + "(no data)")
    xs = np.concatenate([np.asarray(s.x, float) for s in drawn])
    ys = np.concatenate([np.asarray(s.y, float) for s in drawn])
    x_range = (float(np.nanmin(xs)), float(np.nanmax(xs)))
    low, high = float(np.nanmin(ys[np.isfinite(ys)])), float(np.nanmax(ys[np.isfinite(ys)]))
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    bits = np.zeros((rows, columns), np.int64)
    owner = np.full((rows, columns), -1)
    for index, s in enumerate(drawn):
        dots = _pixels(s, columns * 2, rows * 4, x_range, (low, high))
        cell = dots.reshape(rows, 4, columns, 2).transpose(0, 2, 3, 1)  # (row, col, dot col, dot row)
        bits |= (cell * _DOT_BITS).sum(axis=(2, 3))
        owner[cell.any(axis=(2, 3))] = index
    text = head
    for r in range(rows):
        label = f"{high:.3g}" if r == 0 else f"{low:.3g}" if r == rows - 1 else ""
        text.append("\n" + label.rjust(_GUTTER - 1)[: _GUTTER - 1] + "│", style="dim")
        for c in range(columns):
            text.append(
                chr(_BRAILLE + int(bits[r, c])), style=drawn[owner[r, c]].style if owner[r, c] >= 0 else ""
            )
    return text


class LinePlot(Widget):
    """Curves that redraw when `series` is set; sized by CSS (height counts the legend line)."""

    DEFAULT_CSS = """
    LinePlot { height: 8; width: 1fr; }
    """

    series: reactive[tuple[Series, ...]] = reactive((), always_update=True)
    title: reactive[str] = reactive("")

    def __init__(self, title: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.set_reactive(LinePlot.title, title)

    def render(self) -> RenderResult:
        return render_plot(self.series, self.size.width, self.size.height, self.title)

    @property
    def points(self) -> int:
        """How many data points the plot holds (for callers and tests that need to know it drew)."""
        return sum(len(s.x) for s in self.series)
