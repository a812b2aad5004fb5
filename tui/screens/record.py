"""Record: teleoperate, watch joints and cameras, and cut episodes with LeRobot's recorder keys."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Label

from tui.state import Backend, RigState
from tui.widgets.arms import ArmBars
from tui.widgets.camera import CameraView
from tui.widgets.commands import send
from tui.widgets.fields import Field
from tui.widgets.recording import RecordingPanel


class RecordScreen(Screen[None]):
    """→ starts an episode (or ends this one and starts the next), ← discards and re-records it, Esc
    ends it; s / f give the verdict on the last finished episode."""

    AUTO_FOCUS = ""  # keys drive the rig; the task field is entered with Tab or a click
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "next", "Next"),
        Binding("left", "rerecord", "Redo"),
        Binding("escape", "stop", "Stop"),
        Binding("s", "mark('success')", "Success"),
        Binding("f", "mark('failure')", "Fail"),
    ]

    def __init__(self, backend: Backend, task: str = "") -> None:
        super().__init__()
        self.backend = backend
        self.initial_task = task
        self._recording = False
        self._views: dict[str, CameraView] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-row"):
            yield Label("task ", classes="field-label")
            yield Field(self.initial_task, placeholder="the instruction stored with every episode", id="task")
        yield RecordingPanel()
        with Horizontal(classes="arms"):
            yield ArmBars("left")
            yield ArmBars("right")
        yield Horizontal(id="cameras")
        yield Footer()

    def show_state(self, state: RigState) -> None:
        """Called by the app with every snapshot."""
        self._recording = state.recording is not None
        for widget in self.query("RecordingPanel, ArmBars"):  # queries: a snapshot may come before compose
            widget.state = state  # type: ignore[attr-defined]
        for strip in self.query("#cameras"):
            for camera in state.cameras:
                if camera.name not in self._views:
                    self._views[camera.name] = CameraView(camera.name)
                    strip.mount(self._views[camera.name])
                self._views[camera.name].camera = camera

    def action_next(self) -> None:
        task = self.query_one("#task", Field).value.strip()
        if self._recording and not send(self, self.backend.stop_episode):
            return
        send(self, self.backend.start_episode, task)

    def action_rerecord(self) -> None:
        """Discard the episode being recorded and record it again (the help's promise)."""
        if send(self, self.backend.rerecord):
            send(self, self.backend.start_episode, self.query_one("#task", Field).value.strip())

    def action_stop(self) -> None:
        send(self, self.backend.stop_episode)

    def action_mark(self, outcome: str) -> None:
        if send(self, self.backend.mark_last, outcome):
            self.notify(f"last episode marked {outcome}")
