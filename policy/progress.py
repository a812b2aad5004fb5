"""What a training run shows and keeps: a progress line, a loss log (CSV) and a loss-curve PNG, and
the evaluations of its checkpoints (`rig eval` appends to `eval.csv`) with a success-curve PNG."""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import threading
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

LOSS_LOG = "loss.csv"
LOSS_PLOT = "loss.png"
COLUMNS = ("step", "loss", "lr", "grad_norm", "step_s", "samples_per_s")
EVAL_LOG = "eval.csv"
SUCCESS_PLOT = "success.png"


@dataclass
class Progress:
    """A progress bar (steps, rate, loss, elapsed, ETA) that moves at least every `redraw_s`, even
    while one step takes longer: on a terminal one line redrawn in place by a thread of its own,
    elsewhere (a log, the app reading `rig train`'s output) a line per `redraw_s` that saw a step."""

    total: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    width: int = 24
    redraw_s: float = 1.0
    step: int = 0
    loss: float = math.nan
    _started: float = field(default_factory=time.monotonic)
    _first: tuple[int, float] | None = None  # (step, time) of the first step: rates count from it
    _drawn_at: float = 0.0
    _drawn_step: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._tty = self.stream.isatty()
        if self._tty:
            threading.Thread(target=self._redraw, daemon=True, name="progress").start()

    def advance(self, step: int) -> None:
        """Every step: cheap (no device sync); draws when `redraw_s` has passed."""
        now = time.monotonic()
        if self._first is None:  # the first step includes start-up (loading, compiling)
            self._first = (step, now)
        self.step = step
        if not self._tty and now - self._drawn_at >= self.redraw_s:
            self._draw(now)

    def update(self, step: int, loss: float, step_s: float, samples_per_s: float) -> None:
        """A logged step's loss (rates come from the steps counted by `advance`)."""
        self.loss = loss
        self.advance(step)

    def line(self, now: float) -> str:
        filled = int(self.step / max(self.total, 1) * self.width)
        bar = "█" * filled + " " * (self.width - filled)
        rate = math.nan
        if self._first is not None and now > self._first[1] and self.step > self._first[0]:
            rate = (self.step - self._first[0]) / (now - self._first[1])
        eta = (self.total - self.step) / rate if rate > 0 else math.inf
        speed = f"{rate:.2f} steps/s" if rate >= 0.1 else "- steps/s"
        if 0 < rate < 0.1:
            speed = f"{1 / rate:.1f} s/step"
        return (
            f"step {self.step}/{self.total} ▕{bar}▏ {speed} | loss {self.loss:.4f} | "
            f"elapsed {_duration(now - self._started)} | eta {_duration(eta)}"
        )

    def _draw(self, now: float) -> None:
        with self._lock:
            if not self._tty and self.step == self._drawn_step:
                return
            self._drawn_at, self._drawn_step = now, self.step
            text = self.line(now)
            self.stream.write("\r" + text + "\x1b[K" if self._tty else text + "\n")
            self.stream.flush()

    def _redraw(self) -> None:
        while not self._stop.wait(self.redraw_s):
            self._draw(time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._draw(time.monotonic())
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


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
    with _figure(run / LOSS_PLOT, run.name, "flow-matching loss") as axes:
        axes.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1)
        if all(r["loss"] > 0 for r in rows):
            axes.set_yscale("log")
    return run / LOSS_PLOT


@dataclass(frozen=True)
class EvalResult:
    """One `rig eval` of one checkpoint: successes out of episodes, with a 95 % interval."""

    step: int
    task: str
    episodes: int
    successes: int
    ci_low: float
    ci_high: float
    seed: int
    strategy: str
    wall_s: float

    @property
    def rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def append_eval(run: Path, result: EvalResult) -> None:
    path = run / EVAL_LOG
    fields = [f.name for f in dataclasses.fields(EvalResult)]
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(fields)
        writer.writerow([getattr(result, name) for name in fields])


def read_eval_log(path: Path) -> list[EvalResult]:
    if not path.exists():
        return []
    types = typing.get_type_hints(EvalResult)  # each column parsed as its field's type
    with path.open(newline="") as file:
        return [
            EvalResult(**{name: kind(row[name]) for name, kind in types.items()})
            for row in csv.DictReader(file)
        ]


def plot_success(run: Path) -> Path | None:
    """Success rate against training step, one line per task and strategy, 95 % intervals as bars
    (evaluations of one step are pooled: two 10-episode runs count as one of 20)."""
    results = read_eval_log(run / EVAL_LOG)
    if not results:
        return None
    with _figure(run / SUCCESS_PLOT, run.name, "success rate") as axes:
        for task, strategy in sorted({(r.task, r.strategy) for r in results}):
            pooled = _pool([r for r in results if (r.task, r.strategy) == (task, strategy)])
            steps = [p.step for p in pooled]
            rates = [p.rate for p in pooled]
            errors = [[p.rate - p.ci_low for p in pooled], [p.ci_high - p.rate for p in pooled]]
            label = f"{task}, {strategy} ({'/'.join(str(p.episodes) for p in pooled)} episodes)"
            axes.errorbar(steps, rates, yerr=errors, marker="o", capsize=3, linewidth=1, label=label)
        axes.set_ylim(-0.02, 1.02)
        axes.legend(loc="upper left", fontsize="small")
    return run / SUCCESS_PLOT


def _pool(results: list[EvalResult]) -> list[EvalResult]:
    pooled = []
    for step in sorted({r.step for r in results}):
        same = [r for r in results if r.step == step]
        n, k = sum(r.episodes for r in same), sum(r.successes for r in same)
        low, high = wilson_interval(k, n)
        pooled.append(dataclasses.replace(same[0], episodes=n, successes=k, ci_low=low, ci_high=high))
    return pooled


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate: honest at 0/n and n/n, unlike p ± z·se."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@contextmanager
def _figure(path: Path, title: str, ylabel: str) -> Iterator[Any]:
    """A step-axis figure saved to `path` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 3.5), dpi=100)
    try:
        yield axes
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        axes.set_title(title)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)
