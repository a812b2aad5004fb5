"""What `rig run` and `rig eval` share: a policy (local checkpoint or remote server), the loop in
autonomous mode with interventions, and on the twin a scripted "operator" who only resets the scene.

This is an entry-point module: it wires rig/, recorder/ and policy/ together, importing the policy
lazily so `rig teleop` and `rig record` never load torch.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    from policy.interface import Policy, PolicyInfo
    from policy.scheduler import ActionScheduler


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint or --policy, and how chunks are scheduled."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint (or run folder) of `rig train`")
    source.add_argument("--policy", metavar="tcp://HOST:PORT", help="a `rig serve` policy server")
    parser.add_argument("--server-key", type=Path, default=None, help="the server's public key (CurveZMQ)")
    parser.add_argument("--client-key", type=Path, default=None, help="this client's secret key (CurveZMQ)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a remote chunk")
    parser.add_argument("--device", default=None, help="for --checkpoint: cpu or cuda (default: cuda if any)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="paligemma_tokenizer.model for pi0")
    parser.add_argument(
        "--strategy", choices=("rtc", "sync", "naive", "ensemble"), default="rtc", help="chunk scheduling"
    )
    parser.add_argument(
        "--execute", type=int, default=None, help="actions executed per chunk (default: half the chunk)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and the twin's scenes)")


def open_policy(args: argparse.Namespace) -> Policy:
    if args.checkpoint is not None:
        from policy.infer import LocalPolicy

        return LocalPolicy.from_checkpoint(args.checkpoint, args.device, args.tokenizer, seed=args.seed)
    from policy.client import PolicyClient

    return PolicyClient(
        args.policy, timeout_s=args.timeout, server_key=args.server_key, client_key=args.client_key
    )


def open_policy_or_explain(args: argparse.Namespace) -> tuple[Policy, PolicyInfo] | None:
    """The policy and what it is, or None after a one-line error (a bad checkpoint, no server)."""
    from policy.checkpoint import CheckpointError
    from policy.client import PolicyUnavailable

    try:
        policy = open_policy(args)
        return policy, policy.info()
    except (CheckpointError, PolicyUnavailable, ValueError, FileNotFoundError) as error:
        print(f"rig {args.command}: {error}", file=sys.stderr)
        return None


def make_scheduler(
    policy: Policy, prompt: str, args: argparse.Namespace, loop: ControlLoop
) -> ActionScheduler:
    from policy.scheduler import ActionScheduler, SchedulerConfig

    execute = args.execute or max(1, policy.info().action_horizon // 2)
    config = SchedulerConfig(strategy=args.strategy, execute=execute, bounds=loop.safety.bounds)
    return ActionScheduler(policy, prompt, config)


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
