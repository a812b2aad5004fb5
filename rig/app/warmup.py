"""Before a policy takes the arms: its first inference (compilation, caches: seconds on a slow
machine) runs while the operator still drives, a few more are timed, and a policy slower than the
rig needs is refused with that figure instead of engaging and getting lost."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rig.step import Step

if TYPE_CHECKING:
    from policy.interface import Policy

TIMED_CHUNKS = 3  # after the first; their median is the figure (one slow call is the machine's hiccup)


@dataclass(frozen=True)
class ChunkTiming:
    first_s: float  # the first inference, with its one-time costs
    chunk_s: float  # what a chunk takes on this machine from then on
    needed_s: float  # what the rig needs: a new chunk before the executing one's actions run out

    @property
    def fast_enough(self) -> bool:
        return self.chunk_s <= self.needed_s

    def describe(self) -> str:
        return (
            f"a chunk takes {self.chunk_s:.2f} s on this machine (the first {self.first_s:.1f} s); "
            f"the rig needs one within {self.needed_s:.2f} s"
        )


def needed_s(horizon: int, execute: int, rate_hz: float) -> float:
    """A chunk is asked for after `execute` of the executing chunk's actions: the rest must last."""
    return max(horizon - execute, 1) / rate_hz


def warm_up(policy: Policy, step: Step, prompt: str, needed: float) -> ChunkTiming:
    """Run the policy on the rig's current observation: once to warm it up, then timed."""
    from policy.interface import PolicyObservation

    cameras = set(policy.info().cameras)
    observation = PolicyObservation(
        state=np.array(step.qpos, dtype=np.float64),
        images={name: np.array(s.image) for name, s in step.cameras.items() if name in cameras},
        prompt=prompt,
    )
    times = []
    for _ in range(1 + TIMED_CHUNKS):
        start = time.perf_counter()
        policy.infer(observation)
        times.append(time.perf_counter() - start)
    return ChunkTiming(times[0], statistics.median(times[1:]), needed)
