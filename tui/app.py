"""The operator app: record, train and run from one terminal.

It polls `Backend.state()` five times a second and hands each snapshot to the screen's widgets; keys
become backend commands. It never touches a bus, so a device that disappears is a red field in the
next snapshot, never an exception here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from tui.screens.help import HelpScreen
from tui.screens.record import RecordScreen
from tui.screens.run import RunScreen
from tui.state import Backend, RigState
from tui.widgets.commands import send
from tui.widgets.status import StatusBar
from tui.widgets.tabs import SCREENS, ScreenTabs

if TYPE_CHECKING:
    from tui.screens.train import TrainScreen

POLL_S = 0.2
RELEASE_CONFIRM_S = 3.0  # a second ctrl+r within this releases the e-stop
QUIT_CONFIRM_S = 3.0  # while training runs, a second ctrl+q within this stops it and quits


@runtime_checkable
class ShowsState(Protocol):
    """A screen that wants every snapshot (the Record and Run screens)."""

    def show_state(self, state: RigState) -> None: ...


class Unavailable(Screen[None]):
    """Stands in for a screen whose module failed to import, so the rest of the app still runs."""

    def __init__(self, title: str, reason: str) -> None:
        super().__init__()
        self.message = f"The {title} screen is not available: {reason}"

    def compose(self) -> ComposeResult:
        yield Static(self.message, classes="unavailable")
        yield Footer()


class RigApp(App[None]):
    """F1 Record, F2 Episodes, F3 Train, F4 Run; the e-stop (space, ctrl+e) and help (?) everywhere."""

    CSS_PATH = "app.tcss"
    TITLE = "rig"
    ENABLE_COMMAND_PALETTE = False  # ctrl+p would only take footer room; every command is a key
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(key, f"show('{mode}')", title, show=False) for key, mode, title in SCREENS),
        Binding("space", "estop", "E-STOP"),
        Binding("ctrl+e", "estop", "E-stop", show=False, priority=True),
        Binding("ctrl+r", "release", "Release", show=False, priority=True),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, backend: Backend, store_dir: Path, *, task: str = "", poll_s: float = POLL_S) -> None:
        super().__init__()
        self.backend = backend
        self.store_dir = store_dir
        self.poll_s = poll_s
        self.last_state: RigState | None = None
        self._release_asked = -RELEASE_CONFIRM_S
        self._quit_asked = -QUIT_CONFIRM_S
        self._train: TrainScreen | None = None
        self._poll_failed = False
        screens: dict[str, Callable[[], Screen[None]]] = {
            "record": lambda: RecordScreen(backend, task),
            "episodes": self._episodes_screen,
            "train": self._train_screen,
            "run": lambda: RunScreen(backend, task=task),
        }
        for mode, factory in screens.items():
            self.add_mode(mode, factory)

    def _episodes_screen(self) -> Screen[None]:
        try:
            from tui.screens.episodes import EpisodesScreen
        except ImportError as error:
            return Unavailable("Episodes", str(error))
        return EpisodesScreen(self.store_dir, self.backend)

    def _train_screen(self) -> Screen[None]:
        try:
            from tui.screens.train import TrainScreen
        except ImportError as error:
            return Unavailable("Train", str(error))
        self._train = TrainScreen(self.store_dir)
        return self._train

    async def on_mount(self) -> None:
        await self.action_show("record")
        self.poll()
        self.set_interval(self.poll_s, self.poll)

    def poll(self) -> None:
        """Fetch a snapshot and show it on every screen of the current stack."""
        try:
            state = self.backend.state()
        except Exception as error:  # the backend is another layer's threads; keep the operator informed
            if not self._poll_failed:
                self.notify(f"no state from the rig: {error}", severity="error", timeout=10)
            self._poll_failed = True
            return
        self._poll_failed = False
        self.last_state = state
        for screen in self.screen_stack:
            self._show(screen, state)

    @staticmethod
    def _show(screen: Screen[object], state: RigState) -> None:
        screen.set_class(state.estopped, "-estopped")
        for bar in screen.query(StatusBar):
            bar.state = state
        if isinstance(screen, ShowsState):
            screen.show_state(state)

    async def action_show(self, mode: str) -> None:
        """Switch to a screen and give it the status header, whoever wrote the screen."""
        await self.switch_mode(mode)
        screen = self.screen
        if not screen.query(StatusBar):
            await screen.mount(Vertical(ScreenTabs(), StatusBar(), classes="header"), before=0)
        screen.query_one(ScreenTabs).current = mode
        if self.last_state is not None:
            self._show(screen, self.last_state)

    def action_estop(self) -> None:
        if send(self, self.backend.estop):
            self.notify("E-STOP: the followers hold. ctrl+r twice releases.", severity="error", timeout=6)

    def action_release(self) -> None:
        now = time.monotonic()
        if now - self._release_asked > RELEASE_CONFIRM_S:
            self._release_asked = now
            self.notify("press ctrl+r again within 3 s to release the e-stop", severity="warning")
            return
        self._release_asked = -RELEASE_CONFIRM_S
        if send(self, self.backend.release_estop):
            self.notify("e-stop released")

    async def action_quit(self) -> None:
        """ctrl+q; while a training run goes on, only a second ctrl+q stops it (it saves) and quits."""
        job = self._train.job if self._train is not None else None
        now = time.monotonic()
        if job is not None and job.status().running and now - self._quit_asked > QUIT_CONFIRM_S:
            self._quit_asked = now
            self.notify(
                "training is running: ctrl+q again within 3 s stops it (it saves a checkpoint) and quits",
                severity="warning",
            )
            return
        self.exit()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def run_app(profile_name: str, store_dir: Path, task: str = "") -> int:
    """`rig` and `rig tui`: start the real backend on the profile, run the app, always close it."""
    from tui.backend import RigBackend

    backend = RigBackend(profile_name=profile_name, store_dir=store_dir)
    twin = backend.profile.twin
    backend.start()
    try:
        RigApp(backend, store_dir, task=task or (twin.task.replace("_", " ") if twin else "")).run()
    finally:
        backend.close()
    return 0
