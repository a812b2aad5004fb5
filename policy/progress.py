"""What a training run shows and keeps: a progress line, a loss log (CSV) and a loss-curve PNG."""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

LOSS_LOG = "loss.csv"
LOSS_PLOT = "loss.png"
COLUMNS = ("step", "loss", "lr", "grad_norm", "step_s", "samples_per_s")


@dataclass
class Progress:
    """One line redrawn in place on a terminal, or a line per report elsewhere (CI logs, files)."""

    total: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    width: int = 24
    _started: float = field(default_factory=time.monotonic)
    _first_step: int | None = None

    def update(self, step: int, loss: float, step_s: float, samples_per_s: float) -> None:
        if self._first_step is None:  # the first report includes start-up; rates count from it
            self._first_step, self._started = step, time.monotonic()
        done = step / max(self.total, 1)
        filled = int(done * self.width)
        bar = "█" * filled + " " * (self.width - filled)
        elapsed = time.monotonic() - self._started
        rate = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        line = (
            f"step {step}/{self.total} ▕{bar}▏ loss {loss:.4f} | {step_s:.2f} s/step | "
            f"{samples_per_s:.1f} samples/s | eta {_duration(eta)}"
        )
        if self.stream.isatty():
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class LossLog:
    """Appends one row per logged step; a resumed run drops rows past the step it resumes from."""

    def __init__(self, run: Path, resume_step: int = 0) -> None:
        self.path = run / LOSS_LOG
        rows = [r for r in read_loss_log(self.path) if r["step"] <= resume_step] if resume_step else []
        with self.path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(COLUMNS)
            writer.writerows([[int(row["step"]), *(row[c] for c in COLUMNS[1:])] for row in rows])

    def append(self, **values: float) -> None:
        with self.path.open("a", newline="") as file:
            csv.writer(file).writerow([values[c] for c in COLUMNS])


def read_loss_log(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="") as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def plot_loss(run: Path) -> Path | None:
    """The loss curve as a PNG beside the log (log scale: flow-matching losses fall over decades)."""
    rows = read_loss_log(run / LOSS_LOG)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 3.5), dpi=100)
    axes.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1)
    axes.set_xlabel("step")
    axes.set_ylabel("flow-matching loss")
    if all(r["loss"] > 0 for r in rows):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.set_title(run.name)
    figure.tight_layout()
    path = run / LOSS_PLOT
    figure.savefig(path)
    pyplot.close(figure)
    return path
