"""The training runs of a store as `rig runs` and the app list them: each run's checkpoints with the
loss logged at their step and the evaluations `rig eval` logged for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from policy.checkpoint import CHECKPOINTS, META_FILE
from policy.progress import EVAL_LOG, LOSS_LOG, EvalResult, read_eval_log, read_loss_log

RUNS = "runs"  # <store>/runs/<name>/


@dataclass(frozen=True)
class CheckpointSummary:
    step: int
    loss: float | None  # the last logged loss at or before its step
    evals: tuple[EvalResult, ...]

    def describe(self) -> str:
        loss = "-" if self.loss is None else f"{self.loss:.4f}"
        evals = "; ".join(
            f"{e.successes}/{e.episodes} on {e.task} ({e.rate:.0%}, 95 % CI {e.ci_low:.0%}–{e.ci_high:.0%})"
            for e in self.evals
        )
        return f"step {self.step:>7}  loss {loss:>8}  eval {evals or '-'}"


@dataclass(frozen=True)
class RunSummary:
    folder: Path
    config: str
    steps: int | None  # the steps the run was asked for (its newest checkpoint's settings)
    checkpoints: tuple[CheckpointSummary, ...]

    def describe(self) -> list[str]:
        target = f", asked for {self.steps} steps" if self.steps else ""
        head = f"{self.folder.name}  ({self.config}{target})  {self.folder}"
        return (
            [head]
            + [f"  {c.describe()}" for c in self.checkpoints]
            + ([] if self.checkpoints else ["  no checkpoint yet"])
        )


def summarize_run(folder: Path) -> RunSummary:
    losses = read_loss_log(folder / LOSS_LOG)
    evals = read_eval_log(folder / EVAL_LOG)
    complete = sorted(
        (p for p in (folder / CHECKPOINTS).glob("*") if p.name.isdigit() and (p / META_FILE).exists()),
        key=lambda p: int(p.name),
    )
    checkpoints = []
    for path in complete:
        step = int(path.name)
        logged = [row["loss"] for row in losses if row["step"] <= step]
        checkpoints.append(
            CheckpointSummary(step, logged[-1] if logged else None, tuple(e for e in evals if e.step == step))
        )
    config, steps = "?", None
    if complete:
        meta = json.loads((complete[-1] / META_FILE).read_text())
        config = meta.get("config", {}).get("name", "?")
        steps = meta.get("train", {}).get("steps")
    return RunSummary(folder, config, steps, tuple(checkpoints))


def list_runs(store: Path) -> list[RunSummary]:
    """The store's runs, oldest first (run folders are named by their start time)."""
    return [summarize_run(folder) for folder in sorted((store / RUNS).glob("*")) if folder.is_dir()]
