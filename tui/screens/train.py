"""Training from the TUI: start `rig train` on the store, watch its loss, stop it and resume it."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, ProgressBar, Select, Static

from policy.progress import _duration as duration_text
from tui.train_job import TrainJob, TrainStatus
from tui.widgets.fields import Field
from tui.widgets.plot import LinePlot, Series

if TYPE_CHECKING:
    from policy.runs import RunSummary

CONFIGS = ("pi0-tiny", "pi0-small", "pi0")
POLL_S = 0.5
OUTPUT_SHOWN = 6


def _number(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def status_line(status: TrainStatus) -> str:
    """One line of figures under the progress bar."""
    eta = "-" if status.eta_s is None else duration_text(status.eta_s)
    return (
        f"{status.state}  step {status.step}/{status.total}  loss {_number(status.loss, '.4f')}  "
        f"{_number(status.step_s, '.2f', ' s/step')}  {_number(status.samples_per_s, '.1f', ' samples/s')}  "
        f"eta {eta}"
    )


class TrainScreen(Screen[None]):
    """Owns at most one `TrainJob`; leaving the screen stops it (it saves a checkpoint first)."""

    DEFAULT_CSS = """
    TrainScreen #settings { height: auto; }
    TrainScreen #settings Label { padding: 1 0 0 1; }
    TrainScreen #settings Input { width: 10; }
    TrainScreen #settings Select { width: 16; }
    TrainScreen #settings Button { min-width: 8; }
    TrainScreen #figures { height: 1; }
    TrainScreen #run { height: 1; color: $text-muted; }
    TrainScreen #loss { height: 1fr; min-height: 5; }
    TrainScreen #output { height: auto; max-height: 7; color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start"),
        Binding("x", "stop", "Stop (saves)"),
        Binding("r", "resume", "Resume"),
    ]

    def __init__(self, store_dir: Path, extra_args: Sequence[str] = ()) -> None:
        """`extra_args` go to every `rig train` (e.g. `--workers 0`)."""
        super().__init__()
        self.store_dir = Path(store_dir)
        self.extra_args = tuple(extra_args)
        self.job: TrainJob | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="settings"):
            yield Label("model")
            yield Select([(c, c) for c in CONFIGS], value="pi0-small", allow_blank=False, id="config")
            yield Label("steps")
            yield Field("1000", placeholder="steps", type="integer", id="steps")
            yield Label("batch")
            yield Field("8", placeholder="batch size", type="integer", id="batch")
            yield Button("Start", id="start", variant="success")
            yield Button("Stop", id="stop", variant="error")
            yield Button("Resume", id="resume")
        with Vertical():
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Static("idle", id="figures")
            yield Label("", id="run")
            yield LinePlot("loss", id="loss")
            yield Static("", id="output")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(POLL_S, self.refresh_status)
        # Import torch (via policy.checkpoint) off the event loop before the first job reports.
        self.run_worker(partial(importlib.import_module, "policy.checkpoint"), thread=True)
        self.run_worker(self._offer_earlier_run, thread=True)
        self.query_one("#start", Button).focus()  # so the keys reach the screen, not an input

    def _offer_earlier_run(self) -> None:
        """A run of an earlier session with a checkpoint becomes the job `r` resumes (not started)."""
        from policy.runs import list_runs

        runs = [run for run in list_runs(self.store_dir) if run.checkpoints]
        if runs:
            self.app.call_from_thread(self._adopt_earlier_run, runs[-1])

    def _adopt_earlier_run(self, run: RunSummary) -> None:
        if self.job is not None:  # a job was started meanwhile
            return
        step = run.checkpoints[-1].step
        steps = run.steps or step
        self.job = TrainJob(self.store_dir, run.folder, run.config, steps, extra_args=self.extra_args)
        self.query_one("#steps", Field).value = str(steps)
        self.refresh_status()
        self.notify(f"an earlier run stopped at step {step} of {steps}: r resumes it, s starts a new one")

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.close()

    def _setting(self, widget_id: str) -> int | None:
        value = self.query_one(f"#{widget_id}", Input).value.strip()
        if not value.isdigit() or int(value) < 1:
            self.notify(f"{widget_id}: needs a positive whole number", severity="error")
            return None
        return int(value)

    def action_start(self) -> None:
        steps, batch = self._setting("steps"), self._setting("batch")
        if steps is None or batch is None:
            return
        if self.job is not None and self.job.status().running:
            self.notify("training is already running: stop it first", severity="warning")
            return
        config = str(self.query_one("#config", Select).value)
        run_dir = self.store_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{config}"
        self.job = TrainJob(self.store_dir, run_dir, config, steps, batch, self.extra_args)
        self._launch(self.job.start)

    def action_stop(self) -> None:
        if self.job is None or not self.job.status().running:
            self.notify("no training is running", severity="warning")
            return
        self.job.stop()
        self.notify("stopping: rig train saves a checkpoint at the current step")

    def action_resume(self) -> None:
        steps = self._setting("steps")
        if steps is None:
            return
        if self.job is None or self.job.status().checkpoint is None:
            self.notify(
                f"nothing to resume: no run with a checkpoint in {self.store_dir / 'runs'}",
                severity="warning",
            )
            return
        if self.job.status().running:
            self.notify("training is already running", severity="warning")
            return
        job = self.job
        self._launch(lambda: job.resume(steps))

    def _launch(self, launch: Callable[[], None]) -> None:
        try:
            launch()
        except (OSError, RuntimeError) as error:
            self.notify(f"could not start rig train: {error}", severity="error")
        self.refresh_status()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#resume")
    def _resume_pressed(self) -> None:
        self.action_resume()

    def refresh_status(self) -> None:
        """Poll the job and redraw; cheap when nothing changed (the loss log is re-read on change)."""
        if self.job is None:
            return
        status = self.job.status()
        self.query_one("#progress", ProgressBar).update(total=status.total, progress=status.step)
        live = f"{status.state}  {status.progress}" if status.progress else None
        self.query_one("#figures", Static).update(live or status_line(status))
        checkpoint = f"  checkpoint {status.checkpoint.name}" if status.checkpoint else ""
        self.query_one("#run", Label).update(f"run {status.run_dir}{checkpoint}")
        self.query_one("#output", Static).update(Text("\n".join(status.lines[-OUTPUT_SHOWN:])))
        plot = self.query_one("#loss", LinePlot)
        if len(status.losses) != plot.points:
            steps, losses = np.array(status.losses, float).reshape(-1, 2).T
            plot.series = (Series("loss", steps, losses, "yellow"),)
