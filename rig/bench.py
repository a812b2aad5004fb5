"""`rig bench loop`: how well the control loop holds its period, and where a tick's time goes.

Two runs on the twin, in teleop with the leaders still:
- wall clock: the twin free-running beside the loop without cameras (as real hardware would
  be: time does not wait for the loop), so period error and overruns are real;
- lock-step: the twin's simulated clock with the profile's cameras rendering; period error is zero
  by construction, and the figure that matters is wall time per tick (the simulation's speed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hardware.devices import open_devices
from hardware.profile import Profile, Task
from rig.calibration import default_calibrations
from rig.loop import ControlLoop, LoopConfig
from rig.modes import RAMPS, Teleop


def _percentiles_ms(values: Sequence[float]) -> str:
    data = np.asarray(values) * 1e3
    return f"p50 {np.percentile(data, 50):.3f}  p99 {np.percentile(data, 99):.3f}  max {data.max():.3f} ms"


def run_loop(profile: Profile, steps: int, lockstep: bool, cameras: bool) -> str:
    if not cameras:
        profile = dataclasses.replace(profile, cameras={})
    with open_devices(profile, lockstep=lockstep) as devices:
        calibrations = default_calibrations(profile)
        loop = ControlLoop(devices, calibrations, LoopConfig(cameras=cameras, stats_window=steps + 10))
        loop.start()
        loop.set_mode(Teleop(), ramp_s=RAMPS.bench_teleop_s)
        first = loop.wait_for_step()
        wall_start = time.perf_counter()
        step = loop.wait_for_step(first.index + steps - 1, timeout=steps)
        wall = time.perf_counter() - wall_start
        loop.stop(park=False)
    stats = loop.stats
    ticks = list(stats.period_error)[-steps:]
    clock = "simulated clock (lock-step)" if lockstep else "wall clock"
    return "\n".join(
        [
            f"{profile.name}, {clock}, {len(profile.cameras)} cameras, "
            f"{steps} ticks at {profile.rate_hz:g} Hz:",
            f"  period error  {_percentiles_ms(ticks)}",
            f"  overruns {step.overruns}, missed deadlines {stats.missed_deadlines}",
            f"  bus I/O/tick  {_percentiles_ms(list(stats.io_s)[-steps:])}",
            f"  our code/tick {_percentiles_ms(list(stats.compute_s)[-steps:])}",
            f"  wall {wall:.2f} s for {steps / profile.rate_hz:.2f} s on the rig clock "
            f"({1e3 * wall / steps:.1f} ms wall per tick)",
        ]
    )


def bench_loop(profile: Profile, steps: int) -> str:
    return "\n".join(
        [
            run_loop(profile, steps, lockstep=False, cameras=False),
            run_loop(profile, min(steps, 500), lockstep=True, cameras=True),
        ]
    )


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    max_reward: int
    wall_s: float
    full_reward: int  # the twin's reward for the whole task


def teleop_episode(profile: Profile, seed: int, task: Task | None = None) -> EpisodeResult:
    """One seeded episode on the lock-step twin: the scripted operator demonstrates on the leaders,
    the loop teleoperates the followers, and the twin's reward says whether the followers did it."""
    from rig.operator import ScriptedOperator

    assert profile.twin is not None, "teleop episodes need a twin profile"
    twin_spec = dataclasses.replace(profile.twin, seed=seed, lockstep=True, task=task or profile.twin.task)
    profile = dataclasses.replace(profile, cameras={}, twin=twin_spec)
    wall_start = time.perf_counter()
    with open_devices(profile) as devices:
        assert devices.twin is not None
        calibrations = default_calibrations(profile)
        loop = ControlLoop(devices, calibrations, LoopConfig(cameras=False))
        operator = ScriptedOperator(devices.twin)
        loop.start()
        loop.wait_for_step()
        loop.set_mode(Teleop(), ramp_s=RAMPS.bench_demonstration_s)
        demonstration = operator.demonstrate(delay=RAMPS.bench_demonstration_s)
        loop.wait_seconds(RAMPS.bench_demonstration_s + demonstration.duration + 0.5)  # then half a second
        wall_s, full = time.perf_counter() - wall_start, devices.twin.world.max_reward
        result = EpisodeResult(seed, operator.success, operator.max_reward, wall_s, full)
        loop.stop(park=False)
    return result


def bench_teleop(profile: Profile, episodes: int, task: Task | None = None) -> str:
    assert profile.twin is not None, "teleop episodes need a twin profile"
    task = task or profile.twin.task
    results = [teleop_episode(profile, seed, task) for seed in range(episodes)]
    wins = sum(r.success for r in results)
    lines = [
        f"seed {r.seed:3d}: reward {r.max_reward}/{r.full_reward} {'ok' if r.success else 'FAILED'}"
        f" ({r.wall_s:.1f} s)"
        for r in results
    ]
    lines.append(
        f"{task}: {wins}/{episodes} episodes succeeded "
        f"({100 * wins / episodes:.0f} %) through the loop, "
        f"{np.mean([r.wall_s for r in results]):.1f} s wall per episode"
    )
    return "\n".join(lines)
