"""Autonomous mode as an operation: the loop driven by a policy's action scheduler, with interventions,
an optional recorder, and on the twin the reward watched tick by tick.

`rig run`, `rig eval` and the terminal app build on these; the policy itself comes in as an object
(a local checkpoint or a remote client), so nothing here imports the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hardware.devices import Devices
from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.store import Store
from rig import __version__
from rig.calibration import ArmCalibration
from rig.loop import ControlLoop, LoopConfig
from rig.modes import Autonomous, InterventionConfig, Teleop
from rig.step import Step

if TYPE_CHECKING:
    from policy.interface import Policy
    from policy.scheduler import ActionScheduler, InferenceExecutor, Strategy


@dataclass(frozen=True)
class Scheduling:
    """How a policy's chunks become one action per tick (see policy.scheduler)."""

    strategy: Strategy = "rtc"
    execute: int | None = None  # actions executed per chunk; default half the chunk


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


class AutonomySession:
    """The loop, an optional recorder, and mode switches that always blend."""

    def __init__(
        self,
        devices: Devices,
        calibrations: dict[str, ArmCalibration],
        store: Store | None,
        interventions: InterventionConfig | None = None,
    ) -> None:
        self.devices = devices
        self.loop = ControlLoop(devices, calibrations, LoopConfig())
        self.interventions = interventions or InterventionConfig(rate_hz=devices.profile.rate_hz)
        self.reward = RewardWatch(devices)
        self.loop.subscribe(self.reward.on_step)
        self.recorder: EpisodeRecorder | None = None
        if store is not None:
            profile = devices.profile
            session_id = store.catalogue.start_session(
                profile=profile.name,
                profile_snapshot=Path(profile.source).read_text() if profile.source else "",
                calibration={name: json.loads(c.to_json()) for name, c in calibrations.items()},
                rig_version=__version__,
            )
            cameras = [CameraFormat(name, c.width, c.height) for name, c in profile.cameras.items()]
            self.recorder = EpisodeRecorder(store, session_id, cameras, profile.rate_hz)
            self.loop.subscribe(self.recorder.on_step)

    def wait(self, seconds: float, until: object = None) -> Step:
        """Let `seconds` pass on the rig clock (sooner when `until()` turns true)."""
        step = self.loop.wait_for_step()
        end = step.t + seconds
        while step.t < end and not (callable(until) and until()):
            step = self.loop.wait_for_step(step.index, timeout=30)
        return step

    def engage(self, scheduler: ActionScheduler, ramp_s: float) -> Autonomous:
        """Hand the arms to the policy (from the next tick, blending over `ramp_s`)."""
        mode = Autonomous(scheduler, self.interventions)
        self.loop.set_mode(mode, ramp_s=ramp_s)
        step = self.loop.wait_for_step()
        while self.loop.mode is not mode:  # the switch happens at a tick boundary
            step = self.loop.wait_for_step(step.index, timeout=30)
        return mode

    def teleop(self, ramp_s: float) -> None:
        self.loop.set_mode(Teleop(), ramp_s=ramp_s)


def start_row(devices: Devices) -> np.ndarray:
    """The scripted demonstrations' first leader pose: where the twin's autonomous episodes begin."""
    from rig.operator import plan_demonstration

    assert devices.twin is not None
    world = devices.twin.world
    return plan_demonstration(world.task, world.object_poses()).leader[0]
