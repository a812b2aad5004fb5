"""Success and loss curves of several training runs in one figure each, for comparing settings.

Each run folder's `eval.csv` (from `rig eval` or `rig train --eval-every`) gives success against
training samples, with 95 % intervals; its `loss.csv` gives the loss. Labels name the runs.

    .venv/bin/python benchmarks/plot_runs.py --out docs/learning RUN=LABEL [RUN=LABEL ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from policy.progress import EVAL_LOG, LOSS_LOG, read_eval_log, read_loss_log


def batch_size(run: Path) -> int:
    checkpoints = sorted((run / "checkpoints").glob("*/checkpoint.json"))
    if not checkpoints:
        return 1
    return int(json.loads(checkpoints[-1].read_text())["train"].get("batch_size", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="prefix: writes PREFIX-success.png, PREFIX-loss.png"
    )
    parser.add_argument("runs", nargs="+", help="RUN_FOLDER=label")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    labelled = [(Path(run), label) for run, _, label in (item.partition("=") for item in args.runs)]
    figure, axes = pyplot.subplots(figsize=(7, 3.8), dpi=100)
    for run, label in labelled:
        results = sorted(read_eval_log(run / EVAL_LOG), key=lambda r: r.step)
        if not results:
            continue
        batch = batch_size(run)
        samples = [r.step * batch / 1000 for r in results]
        rates = [r.rate for r in results]
        errors = [[r.rate - r.ci_low for r in results], [r.ci_high - r.rate for r in results]]
        axes.errorbar(samples, rates, yerr=errors, marker="o", capsize=3, linewidth=1, label=label)
    axes.set(xlabel="training samples (thousands)", ylabel="success rate", ylim=(-0.02, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    figure.savefig(f"{args.out}-success.png")
    pyplot.close(figure)

    figure, axes = pyplot.subplots(figsize=(7, 3.8), dpi=100)
    for run, label in labelled:
        rows = read_loss_log(run / LOSS_LOG)
        if rows:
            batch = batch_size(run)
            axes.plot(
                [r["step"] * batch / 1000 for r in rows], [r["loss"] for r in rows], linewidth=1, label=label
            )
    axes.set(xlabel="training samples (thousands)", ylabel="flow-matching loss", yscale="log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(f"{args.out}-loss.png")
    pyplot.close(figure)
    print(f"wrote {args.out}-success.png and {args.out}-loss.png")


if __name__ == "__main__":
    main()
