"""Evaluation speed on the twin: episodes a minute with every camera rendered and recorded as
recording does (`--full-video`), against `rig eval`'s default (only the policy's cameras, at the
size its crop needs, at 10 Hz). Same checkpoint, same seeds, same simulated inference latency, so
the success counts must agree closely; only the time may differ. CPU seconds (this process, all its
threads: twin, renderer, encoder, policy) are given beside wall seconds, so that a figure taken while
other work shares the machine still compares.

    .venv/bin/python benchmarks/bench_eval.py --checkpoint RUN_OR_CHECKPOINT [--episodes 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from hardware.profile import load_profile
from policy.infer import LocalPolicy
from recorder.store import Store
from rig.app.evaluate import EvalSettings, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    profile = load_profile("aloha-sim")
    base = EvalSettings(episodes=args.episodes, seed=args.seed)
    print(
        f"{'rendering':<48}{'episodes':>9}{'successes':>10}{'wall s':>8}{'CPU s':>8}"
        f"{'episodes/min':>14}{'per CPU-min':>13}"
    )
    rates: list[float] = []
    for name, settings in (
        ("every camera, full size, 50 Hz (--full-video)", dataclasses.replace(base, full_video=True)),
        ("the policy's cameras and crop, 10 Hz (default)", base),
    ):
        policy = LocalPolicy.from_checkpoint(args.checkpoint, "cpu", seed=0)
        cpu_started = time.process_time()
        with tempfile.TemporaryDirectory() as folder, Store(Path(folder)) as store:
            report = evaluate(policy, policy.info(), profile, store, settings, say=lambda _: None)
        cpu_s = time.process_time() - cpu_started
        rate, cpu_rate = 60 * args.episodes / report.wall_s, 60 * args.episodes / cpu_s
        rates.append(cpu_rate)
        print(
            f"{name:<48}{args.episodes:>9}{report.successes:>10}{report.wall_s:>8.0f}{cpu_s:>8.0f}"
            f"{rate:>14.1f}{cpu_rate:>13.1f}"
        )
    print(f"eval speed-up {rates[1] / rates[0]:.1f}x episodes per CPU-minute")


if __name__ == "__main__":
    main()
