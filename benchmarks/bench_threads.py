"""Training-step time under OpenMP's wait policies, on a quiet machine and beside a busy process.

Each setting runs in a fresh process (the policy is read when torch loads OpenMP): pi0-small's
training step (bf16 autocast where it pays, one camera, batch 16) timed after warm-up, with
`OMP_WAIT_POLICY` unset-equivalent (ACTIVE) or PASSIVE and 1 or all cores' threads; then again while
one process spins on a core, as another job on a shared machine does.

    .venv/bin/python benchmarks/bench_threads.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

STEP = """
import json, os, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from policy.bench import random_inputs
from policy.config import get_config
from policy.pi0 import Pi0, sample_flow_time
from policy.precision import autocast
config = get_config("pi0-small")
model = Pi0(config)
generator = torch.Generator().manual_seed(0)
inputs = random_inputs(config, 16, 1, generator)
actions = torch.randn(16, config.action_horizon, config.action_dim)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
walls, cpus = [], []
for step in range(int(sys.argv[2]) + 1):
    wall, cpu = time.perf_counter(), time.process_time()
    with autocast(torch.device("cpu")):
        loss = model(inputs, actions, torch.randn_like(actions), sample_flow_time(16, generator)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step:
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
walls.sort()
cpus.sort()
print(json.dumps({"wall": walls[len(walls) // 2], "cpu": cpus[len(cpus) // 2]}))
"""


def measure(policy: str, threads: int, steps: int) -> dict[str, float]:
    env = dict(os.environ, OMP_WAIT_POLICY=policy)
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(threads), str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = [("ACTIVE", cores), ("PASSIVE", cores), ("PASSIVE", 1)]
    print(f"pi0-small training step, batch 16, 1 camera; median of {args.steps} steps; {cores} cores")
    print(f"{'OMP_WAIT_POLICY':<16}{'threads':>8}  {'machine':<22}{'wall s':>8}{'CPU s':>8}")
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(0.5 if busy else 0.0)
            for policy, threads in settings:
                figures = measure(policy, threads, args.steps)
                where = "one core held by another" if busy else "quiet"
                print(f"{policy:<16}{threads:>8}  {where:<22}{figures['wall']:>8.2f}{figures['cpu']:>8.2f}")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()


if __name__ == "__main__":
    main()
