"""What a policy looks like from the rig's side: an observation in, a chunk of actions out.

The same protocol is served by a model in this process (`policy.infer.LocalPolicy`) and by a policy
server across zmq (`policy.client.PolicyClient`), so the scheduler cannot tell them apart.
Everything here is in the robot's units (14-vectors, see rig.step); normalization is the policy's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class PolicyObservation:
    state: np.ndarray  # (14,) follower positions
    images: Mapping[str, np.ndarray]  # camera name → (h, w, 3) uint8 RGB; a missing camera is masked
    prompt: str


@dataclass(frozen=True, eq=False)
class Guidance:
    """Real-time chunking: how the new chunk should continue the one that is executing.

    `actions[i]` is what the previous chunk planned for the new chunk's step i (it runs out before
    the new horizon ends). The first `frozen` of them execute while the model thinks, so the new
    chunk must agree with them; after that the pull fades out (a soft exponential mask) until
    `horizon - execute` where it stops, leaving the model free for the rest.
    """

    actions: np.ndarray  # (k, 14), k ≤ action horizon
    frozen: int  # d: steps that execute during inference
    execute: int  # s: steps executed per chunk; the mask is zero from horizon - s on


@dataclass(frozen=True)
class PolicyInfo:
    config: str
    cameras: tuple[str, ...]  # the cameras the policy reads, in its slot order
    action_dim: int  # 14
    action_horizon: int  # actions per chunk
    num_steps: int
    step: int  # the checkpoint's training step
    tasks: tuple[str, ...] = ()  # the task texts it was trained on (the default prompt is the first)
    # Per camera, the region of its frame the model sees (left, top, right, bottom fractions), and the
    # model's image side: with them a renderer makes no more pixels than the policy uses.
    crops: tuple[tuple[float, float, float, float], ...] = ()
    image_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "cameras": list(self.cameras),
            "tasks": list(self.tasks),
            "crops": [list(crop) for crop in self.crops],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PolicyInfo:
        return cls(
            config=str(values["config"]),
            cameras=tuple(values["cameras"]),
            action_dim=int(values["action_dim"]),
            action_horizon=int(values["action_horizon"]),
            num_steps=int(values["num_steps"]),
            step=int(values["step"]),
            tasks=tuple(values.get("tasks", ())),
            crops=tuple(
                (float(c[0]), float(c[1]), float(c[2]), float(c[3])) for c in values.get("crops", ())
            ),
            image_size=int(values.get("image_size", 0)),
        )


class Policy(Protocol):
    def info(self) -> PolicyInfo: ...

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        """A chunk (action_horizon, 14) in the robot's units, starting at the observation's tick."""
        ...
