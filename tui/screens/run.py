"""Run: let a policy drive, watch it keep up, and take the arms back when it goes wrong."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Label

from tui.state import Backend, RigState
from tui.widgets.arms import ArmBars
from tui.widgets.autonomy import AutonomyPanel
from tui.widgets.commands import send
from tui.widgets.events import EventLog
from tui.widgets.fields import Field


class RunScreen(Screen[None]):
    """`a` starts the policy named in the field (a checkpoint folder or a tcp:// server) and stops it
    again (the followers blend back to teleop); `t` takes both arms over and hands them back."""

    AUTO_FOCUS = ""  # keys drive the rig; the fields are entered with Tab or a click
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "toggle_autonomy", "Autonomy on/off"),
        Binding("t", "toggle_takeover", "Take over/back"),
    ]

    def __init__(self, backend: Backend, target: str = "", task: str = "") -> None:
        super().__init__()
        self.backend = backend
        self.initial_target = target
        self.initial_task = task
        self._state: RigState | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-row"):
            yield Label("policy ", classes="field-label")
            yield Field(self.initial_target, placeholder="checkpoint folder or tcp://host:5555", id="target")
        with Horizontal(classes="field-row"):
            yield Label("task ", classes="field-label")
            yield Field(self.initial_task, placeholder="the instruction the policy is given", id="run-task")
        yield AutonomyPanel()
        with Horizontal(classes="arms"):
            yield ArmBars("left")
            yield ArmBars("right")
        yield EventLog()
        yield Footer()

    def show_state(self, state: RigState) -> None:
        """Called by the app with every snapshot."""
        self._state = state
        for panel in self.query(AutonomyPanel):  # queries: a snapshot may come before compose
            panel.autonomy = state.autonomy
        for arms in self.query(ArmBars):
            arms.state = state
        for log in self.query(EventLog):
            log.events = state.events

    def action_toggle_autonomy(self) -> None:
        if self._state is not None and self._state.autonomy is not None:  # running, loading or failed
            send(self, self.backend.stop_autonomy)
            return
        target = self.query_one("#target", Field).value.strip()
        if not target:
            self.notify("enter a checkpoint folder or a tcp:// address first", severity="warning")
            return
        task = self.query_one("#run-task", Field).value.strip()
        if target.startswith("tcp://"):
            send(self, self.backend.start_autonomy, endpoint=target, task=task)
        else:
            send(self, self.backend.start_autonomy, checkpoint=target, task=task)

    def action_toggle_takeover(self) -> None:
        autonomy = self._state.autonomy if self._state is not None else None
        if autonomy is not None and autonomy.intervention:
            send(self, self.backend.hand_back)
        else:
            send(self, self.backend.take_over)
