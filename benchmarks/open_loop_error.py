"""Open-loop action error of a checkpoint on held-out demonstrations: how far its sampled chunks are
from what the demonstrator did next, by how far into the episode the chunk starts.

A success rate needs minutes of simulation per episode; this needs one chunk per probe and says
where a policy goes wrong: a large error at step 0 (before anything moved) means the model does not
see where the object is, one that grows later means it follows the state, not the picture.

    .venv/bin/python benchmarks/open_loop_error.py --checkpoint RUN --store HELD_OUT_STORE [--every 50]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from policy.infer import LocalPolicy
from policy.interface import PolicyObservation
from recorder.reader import WindowReader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--store", type=Path, required=True, help="demonstrations the policy did not train on"
    )
    parser.add_argument("--every", type=int, default=50, help="probe every N steps of each episode")
    parser.add_argument(
        "--draws", type=int, default=1, help="chunks sampled per probe (their mean is scored)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = LocalPolicy.from_checkpoint(args.checkpoint, "cpu", seed=0)
    info = policy.info()
    reader = WindowReader(args.store, horizon=info.action_horizon, cameras=info.cameras)
    errors: dict[int, list[float]] = {}
    for episode_id in reader.episode_ids:
        episode = reader.episode(episode_id)
        for index in range(0, len(episode), args.every):
            window = episode.window(index, info.action_horizon)
            observation = PolicyObservation(window.state, window.images, window.task)
            chunks = np.stack([policy.infer(observation) for _ in range(args.draws)])
            real = ~window.action_is_pad
            error = np.abs(chunks.mean(axis=0)[real] - window.actions[real])
            errors.setdefault(index, []).append(float(error[:, :6].mean() + error[:, 7:13].mean()) / 2)
    print(
        f"{args.checkpoint}: mean |action error| of the arm joints (rad) "
        f"over a {info.action_horizon}-step chunk"
    )
    print(f"{'from step':>10}{'episodes':>10}{'error':>10}")
    for index in sorted(errors):
        print(f"{index:>10}{len(errors[index]):>10}{np.mean(errors[index]):>10.4f}")
    print(f"{'all':>10}{'':>10}{np.mean([e for v in errors.values() for e in v]):>10.4f}")


if __name__ == "__main__":
    main()
