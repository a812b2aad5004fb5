"""The header every screen shows: is the rig healthy, what is it doing, and is there room to record."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.state import RigState

MODE_STYLES = {
    "idle": "bold white on grey37",
    "teleop": "bold black on green",
    "autonomous": "bold black on dodger_blue1",
    "intervention": "bold black on yellow",
    "replay": "bold black on magenta",
    "e-stop": "bold white on red",
}


def human_bytes(n: int) -> str:
    """Sizes as people read them on a disk: 1.2 GB, 340 MB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "kB") else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class StatusBar(Widget):
    """Two lines: mode and loop health, then cameras and store. Anything wrong is red, so a glance at
    the top of any screen tells whether the rig can be trusted right now."""

    state: reactive[RigState | None] = reactive(None, layout=True)

    def render(self) -> Text:
        state = self.state
        if state is None:
            return Text("connecting to the rig…", style="dim")
        text = Text("\n").join([self._loop_line(state), self._device_line(state)])
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text

    @staticmethod
    def _loop_line(state: RigState) -> Text:
        mode = "E-STOP" if state.estopped else state.mode.upper()
        line = Text.assemble(
            (f" {mode} ", MODE_STYLES["e-stop"] if state.estopped else MODE_STYLES.get(state.mode, "bold")),
            " ",
            (state.profile, "bold"),
            (" twin" if state.twin else "", "dim"),
            f"  {state.rate_hz:4.1f} Hz  p99 {state.period_error_p99_ms:.1f} ms  ",
            (f"overruns {state.overruns}", "red" if state.overruns else ""),
            "  ",
        )
        if state.bus_errors:
            line.append("bus: " + "; ".join(state.bus_errors), style="bold red")
        else:
            line.append("bus ok", style="green")
        if state.twin_reward is not None:
            line.append(f"  reward {state.twin_reward}")
        return line

    @staticmethod
    def _device_line(state: RigState) -> Text:
        line = Text()
        for camera in state.cameras:
            line.append(camera.name.removeprefix("cam_"), style="" if camera.ok else "bold red")
            line.append(f" {camera.fps:.0f}fps", style="" if camera.ok else "red")
            if camera.drops:
                line.append(f" {camera.drops}drop", style="yellow")
            line.append("  ")
        free_style = "bold red" if state.free_bytes < 1_000_000_000 else ""
        line.append_text(
            Text.assemble(
                f"store {human_bytes(state.store_bytes)}, ",
                (f"{human_bytes(state.free_bytes)} free", free_style),
            )
        )
        return line
