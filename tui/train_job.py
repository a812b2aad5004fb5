"""`rig train` as a child process the TUI can watch, stop and resume without blocking its event loop.

Progress comes from the run folder (`loss.csv`, checkpoints), which outlives the process, and from the
child's output lines, which a reader thread collects; SIGINT asks `rig train` to save and exit.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from policy.progress import LOSS_LOG, read_loss_log

OUTPUT_LINES = 200  # output lines kept
RATE_WINDOW = 10  # logged steps averaged for the step time and the ETA
PROGRESS_LINE = re.compile(r"step (\d+)/(\d+) ")  # policy.progress.Progress's lines


@dataclass(frozen=True)
class TrainStatus:
    """A snapshot of the job, for one redraw."""

    state: str  # idle, running, stopping, stopped, finished, failed
    step: int
    total: int
    loss: float | None
    step_s: float | None
    samples_per_s: float | None
    eta_s: float | None
    losses: tuple[tuple[int, float], ...]  # (step, loss) per logged step, for the plot
    lines: tuple[str, ...]  # the child's last output lines, newest last
    returncode: int | None
    checkpoint: Path | None
    run_dir: Path
    progress: str | None = None  # while running: rig train's progress bar (steps, rate, ETA), live

    @property
    def running(self) -> bool:
        return self.state in ("running", "stopping")


class TrainJob:
    """One run folder, trained by one `rig train` child at a time (start, then stop/resume)."""

    def __init__(
        self,
        store: Path,
        run_dir: Path,
        config: str = "pi0-small",
        steps: int = 1000,
        batch_size: int = 8,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.store, self.run_dir, self.config = Path(store), Path(run_dir), config
        self.steps, self.batch_size, self.extra_args = steps, batch_size, tuple(extra_args)
        self._process: subprocess.Popen[str] | None = None
        self._lines: deque[str] = deque(maxlen=OUTPUT_LINES)
        self._progress: str | None = None  # rig train's newest progress-bar line
        self._stop_requested = False
        self._log_key: tuple[int, int] | None = None  # (mtime, size) of the loss log last read
        self._rows: list[dict[str, float]] = []

    def command(self, resume: bool) -> list[str]:
        """A resumed run keeps its own settings (model, batch, learning rate) except the steps."""
        args = [
            sys.executable,
            "-m",
            "rig.cli",
            "train",
            "--store",
            str(self.store),
            "--out",
            str(self.run_dir),
        ]
        args += ["--steps", str(self.steps)]
        if resume:
            return [*args, "--resume", *self.extra_args]
        return [*args, "--config", self.config, "--batch-size", str(self.batch_size), *self.extra_args]

    def start(self) -> None:
        self._launch(resume=False)

    def resume(self, steps: int | None = None) -> None:
        """Continue from the run's latest checkpoint, to `steps` (default: the total it had)."""
        if steps is not None:
            self.steps = steps
        self._launch(resume=True)

    def stop(self) -> None:
        """Ask the child to save a checkpoint at its current step and exit (it does so on SIGINT)."""
        if self._process is not None and self._process.poll() is None:
            self._stop_requested = True
            self._process.send_signal(signal.SIGINT)

    def close(self, timeout: float | None = None) -> None:
        """Stop the child; wait `timeout` seconds for it (None: don't wait), then kill it."""
        self.stop()
        if self._process is not None and timeout is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _launch(self, resume: bool) -> None:
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("training is already running")
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        self._stop_requested = False
        self._lines.append("$ " + " ".join(self.command(resume)[2:]))
        # A session of its own: the terminal's Ctrl-C goes to the app, never straight to the child.
        self._process = subprocess.Popen(
            self.command(resume),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self._process,), daemon=True, name="train-output").start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        """Output lines, less the progress bar's, which only the newest matters of (once a second)."""
        assert process.stdout is not None
        for line in process.stdout:
            for part in line.rstrip("\n").split("\r"):
                if PROGRESS_LINE.match(part):
                    self._progress = part
                elif part.strip():
                    self._lines.append(part)

    def _loss_rows(self) -> list[dict[str, float]]:
        """The loss log, re-read only when it changed; a row caught half-written keeps the last read."""
        path = self.run_dir / LOSS_LOG
        try:
            stat = path.stat()
        except FileNotFoundError:
            return self._rows
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._log_key:
            with contextlib.suppress(ValueError, TypeError):
                self._rows, self._log_key = read_loss_log(path), key
        return self._rows

    def status(self) -> TrainStatus:
        process = self._process
        returncode = None if process is None else process.poll()
        if process is None:
            state = "idle"
        elif returncode is None:
            state = "stopping" if self._stop_requested else "running"
        elif returncode != 0:
            state = "failed"
        else:
            state = "stopped" if self._stop_requested else "finished"
        rows = self._loss_rows()
        last = rows[-1] if rows else None
        checkpoint = _latest_checkpoint(self.run_dir)
        live = PROGRESS_LINE.match(self._progress or "")
        step = max(  # the loss log has every `log_every`-th step; the progress bar and checkpoints more
            int(last["step"]) if last else 0,
            int(live.group(1)) if live else 0,
            int(checkpoint.name) if checkpoint is not None else 0,
        )
        recent = [row["step_s"] for row in rows[-RATE_WINDOW:] if math.isfinite(row["step_s"])]
        step_s = sum(recent) / len(recent) if recent else None
        return TrainStatus(
            state=state,
            step=step,
            total=self.steps,
            loss=last["loss"] if last else None,
            step_s=step_s,
            samples_per_s=last["samples_per_s"] if last else None,
            eta_s=max(self.steps - step, 0) * step_s if step_s is not None and state == "running" else None,
            losses=tuple((int(row["step"]), row["loss"]) for row in rows),
            lines=tuple(self._lines),
            returncode=returncode,
            checkpoint=checkpoint,
            progress=self._progress if state == "running" else None,
            run_dir=self.run_dir,
        )


def _latest_checkpoint(run: Path) -> Path | None:
    """`policy.checkpoint` imports torch (seconds), so the TUI imports it only once a job reports."""
    from policy.checkpoint import latest_checkpoint

    return latest_checkpoint(run)
