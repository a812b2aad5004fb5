"""Opening a policy from a typed spec: a local checkpoint or a remote `rig serve` server.

`rig run`, `rig eval` and the terminal app's Run screen fill a `PolicySpec` (the commands from their
arguments, the app from its fields) and call `open_policy`; the model is imported only here, when a
policy is opened, so the rig's own operations never load torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policy.interface import Policy, PolicyInfo
    from policy.scheduler import Strategy


@dataclass(frozen=True)
class Scheduling:
    """How a policy's chunks become one action per tick (see policy.scheduler)."""

    strategy: Strategy = "rtc"
    execute: int | None = None  # actions executed per chunk; default half the chunk


class PolicyUnavailableError(Exception):
    """The policy could not be opened: a bad checkpoint, no server, a wrong key. The message says which."""


@dataclass(frozen=True)
class PolicySpec:
    """Which policy drives and how its chunks are scheduled; exactly one of checkpoint and endpoint."""

    checkpoint: Path | None = None  # a checkpoint (or run folder) of `rig train`
    endpoint: str | None = None  # tcp://HOST:PORT of a `rig serve` server
    server_key: Path | None = None  # the server's public key (CurveZMQ)
    client_key: Path | None = None  # this client's secret key (CurveZMQ)
    timeout_s: float = 2.0  # how long to wait for a remote chunk
    device: str | None = None  # for a checkpoint: cpu or cuda (None: cuda when there is one)
    tokenizer: Path | None = None  # paligemma_tokenizer.model for pi0
    seed: int = 0  # sampling seed
    scheduling: Scheduling = field(default_factory=Scheduling)

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.endpoint is None):
            raise ValueError("give a checkpoint or a policy server's endpoint (one of them)")

    @property
    def label(self) -> str:
        return str(self.checkpoint if self.checkpoint is not None else self.endpoint)


def open_policy(spec: PolicySpec) -> Policy:
    """The policy `spec` names (a checkpoint loads in seconds; a server is only connected to)."""
    if spec.checkpoint is not None:
        from policy.infer import LocalPolicy

        return LocalPolicy.from_checkpoint(spec.checkpoint, spec.device, spec.tokenizer, seed=spec.seed)
    from policy.client import PolicyClient

    assert spec.endpoint is not None
    return PolicyClient(
        spec.endpoint, timeout_s=spec.timeout_s, server_key=spec.server_key, client_key=spec.client_key
    )


def open_policy_and_info(spec: PolicySpec) -> tuple[Policy, PolicyInfo]:
    """The policy and what it is; PolicyUnavailableError (one line) when it cannot be opened."""
    from policy.checkpoint import CheckpointError
    from policy.client import PolicyUnavailable

    try:
        policy = open_policy(spec)
        return policy, policy.info()
    except (CheckpointError, PolicyUnavailable, ValueError, FileNotFoundError) as error:
        raise PolicyUnavailableError(str(error)) from error
