"""A camera preview in the terminal: each character cell shows two pixels, one above the other."""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import CameraStatus


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w, 3) image to fit `width` x `height` pixels, keeping its
    aspect ratio; the height comes out even, two pixel rows per character row."""
    ih, iw = image.shape[:2]
    scale = min(width / iw, height / ih)
    tw, th = max(int(iw * scale), 1), max(int(ih * scale) // 2 * 2, 2)
    rows = np.minimum((np.arange(th) * ih / th).astype(int), ih - 1)
    cols = np.minimum((np.arange(tw) * iw / tw).astype(int), iw - 1)
    return image[rows][:, cols]


class HalfBlocks:
    """A rich renderable of an (h, w, 3) uint8 image with h even: '▀' with the upper pixel as the
    foreground colour and the lower pixel as the background."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        image = self.image
        for y in range(0, image.shape[0] - 1, 2):
            for top, bottom in zip(image[y].tolist(), image[y + 1].tolist(), strict=True):
                yield Segment("▀", Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom)))
            yield Segment.line()


class CameraView(Widget):
    """One camera's latest small frame, its name and rate in the border (red when it stopped)."""

    camera: reactive[CameraStatus | None] = reactive(None)

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.border_title = name

    def watch_camera(self, camera: CameraStatus | None) -> None:
        if camera is not None:
            self.border_title = f"{camera.name} {camera.fps:.0f} fps" if camera.ok else f"{camera.name} LOST"
            self.set_class(not camera.ok, "-lost")

    def render(self) -> HalfBlocks | Text:
        camera = self.camera
        if camera is None or camera.preview is None:
            return Text("no image", style="dim")
        width, height = self.content_size
        if width < 1 or height < 1:
            return Text("")
        return HalfBlocks(fit(camera.preview, width, height * 2))
