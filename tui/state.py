"""What the app shows and what it can ask for: plain snapshots and a command protocol.

The app never touches a bus: it polls `RigBackend.state()` a few times a second and calls its
commands; everything else happens on the backend's threads (the loop, the recorder, the policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class CameraStatus:
    name: str
    fps: float  # frames that reached the loop per second, recently
    drops: int  # frames the recorder could not encode this episode
    ok: bool  # False when the camera stopped delivering (shown in red)
    preview: np.ndarray | None  # a small (h, w, 3) uint8 copy of the latest frame, or None


@dataclass(frozen=True)
class RecordingStatus:
    episode_id: int
    task: str
    elapsed_s: float  # on the rig clock
    planned_s: float | None  # the episode's planned length (the twin's demonstration), if known


@dataclass(frozen=True)
class AutonomyStatus:
    policy: str  # "pi0-small step 1500 (local)" or "tcp://host:5555"
    strategy: str
    chunks: int
    latency_ms: float | None  # the last chunk's inference time
    delay_ticks: int | None  # the last chunk's delay in ticks
    starved_ticks: int  # ticks that found no action ready
    intervention: tuple[str, ...]  # arm sides the operator has taken over
    lost: bool  # the policy stopped answering; the rig holds


@dataclass(frozen=True, eq=False)
class RigState:
    profile: str
    twin: bool
    mode: str  # idle, teleop, autonomous, intervention, replay, move, park, e-stop
    estopped: bool
    rate_hz: float  # ticks per second of the rig clock, recently
    period_error_p99_ms: float
    overruns: int
    bus_errors: tuple[str, ...]  # one line per arm that is not answering
    joint_names: tuple[str, ...]  # 14, "left.waist" …
    qpos: np.ndarray | None  # (14,) followers
    leader: np.ndarray | None  # (14,) leaders
    lower: np.ndarray  # (14,) joint ranges, for bars
    upper: np.ndarray
    cameras: tuple[CameraStatus, ...]
    store_path: str
    store_bytes: int
    free_bytes: int
    episodes_in_store: int
    recording: RecordingStatus | None
    autonomy: AutonomyStatus | None
    twin_reward: int | None
    events: tuple[str, ...] = field(default=())  # newest last, a few dozen


class Backend(Protocol):
    """Commands the app sends; each returns quickly (work happens on the backend's threads) and
    raises `CommandRefused` with a message for the user when it cannot be done now."""

    def state(self) -> RigState: ...

    # -- recording -----------------------------------------------------------------------------
    def start_episode(self, task: str) -> None: ...
    def stop_episode(self, outcome: str | None = None) -> None: ...  # "success" / "failure" / None
    def rerecord(self) -> None: ...  # discard the episode being recorded
    def mark_last(self, outcome: str) -> None: ...  # the verdict on the last finished episode

    # -- modes ----------------------------------------------------------------------------------
    def teleop(self) -> None: ...
    def estop(self) -> None: ...  # hold now, from any screen
    def release_estop(self) -> None: ...
    def start_autonomy(
        self, checkpoint: str | None = None, endpoint: str | None = None, task: str = ""
    ) -> None: ...
    def stop_autonomy(self) -> None: ...  # back to teleop, blended
    def take_over(self) -> None: ...
    def hand_back(self) -> None: ...

    # -- episodes -------------------------------------------------------------------------------
    def replay(self, episode_id: int) -> None: ...
    def delete(self, episode_id: int) -> None: ...

    def close(self) -> None: ...


class CommandRefused(RuntimeError):
    """A command that cannot be done in the rig's current state; the message says why."""
