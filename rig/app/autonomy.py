"""Autonomous mode as an operation: the loop driven by a policy's action scheduler, with interventions,
an optional recorder, and on the twin the reward watched tick by tick.

`rig run`, `rig eval` and the terminal app build on these; the policy itself comes in as an object
(a local checkpoint or a remote client), so nothing here imports the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hardware.devices import Devices
from recorder.store import Store
from rig.app.policy import Scheduling
from rig.app.session import RigSession
from rig.calibration import ArmCalibration
from rig.loop import ControlLoop
from rig.modes import Autonomous, InterventionConfig, Teleop
from rig.step import Step

if TYPE_CHECKING:
    from policy.interface import Policy
    from policy.scheduler import ActionScheduler, InferenceExecutor

__all__ = ["AutonomySession", "RewardWatch", "Scheduling", "schedule", "start_row"]


def schedule(
    policy: Policy,
    prompt: str,
    scheduling: Scheduling,
    loop: ControlLoop,
    executor: InferenceExecutor | None = None,
) -> ActionScheduler:
    """An action scheduler for `policy`, bounded by the loop's joint ranges."""
    from policy.scheduler import ActionScheduler, SchedulerConfig

    execute = scheduling.execute or max(1, policy.info().action_horizon // 2)
    config = SchedulerConfig(strategy=scheduling.strategy, execute=execute, bounds=loop.safety.bounds)
    return ActionScheduler(policy, prompt, config, executor)


@dataclass
class RewardWatch:
    """The twin's best reward since `reset` (read on the loop thread, where lock-step physics runs)."""

    devices: Devices
    best: int = 0

    def reset(self) -> None:
        self.best = 0

    def on_step(self, step: Step) -> None:
        twin = self.devices.twin
        if twin is not None:
            self.best = max(self.best, twin.world.reward())

    @property
    def success(self) -> bool:
        twin = self.devices.twin
        return twin is not None and (self.best >= twin.world.max_reward or twin.world.success())


class AutonomySession(RigSession):
    """The loop, an optional recorder, the twin's reward, and mode switches that always blend."""

    def __init__(
        self,
        devices: Devices,
        calibrations: Mapping[str, ArmCalibration],
        store: Store | None,
        interventions: InterventionConfig | None = None,
    ) -> None:
        super().__init__(devices, calibrations, store)
        self.interventions = interventions or InterventionConfig(rate_hz=devices.profile.rate_hz)
        self.reward = RewardWatch(devices)
        self.loop.subscribe(self.reward.on_step)

    def engage(self, scheduler: ActionScheduler, ramp_s: float) -> Autonomous:
        """Hand the arms to the policy (from the next tick, blending over `ramp_s`)."""
        mode = Autonomous(scheduler, self.interventions)
        self.loop.set_mode(mode, ramp_s=ramp_s)
        self.loop.wait_seconds(float("inf"), until=lambda _: self.loop.mode is mode)  # at a tick boundary
        return mode

    def teleop(self, ramp_s: float) -> None:
        self.loop.set_mode(Teleop(), ramp_s=ramp_s)


def start_row(devices: Devices) -> np.ndarray:
    """The scripted demonstrations' first leader pose: where the twin's autonomous episodes begin."""
    from rig.operator import plan_demonstration

    assert devices.twin is not None
    world = devices.twin.world
    return plan_demonstration(world.task, world.object_poses()).leader[0]
