"""The command-line side of autonomous mode, shared by `rig run` and `rig eval`: the arguments that
name a policy (a local checkpoint or a remote server) and how its chunks are scheduled. The
operation itself is in rig.app.autonomy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rig.app.autonomy import Scheduling, schedule
from rig.loop import ControlLoop

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


def scheduling(args: argparse.Namespace) -> Scheduling:
    return Scheduling(strategy=args.strategy, execute=args.execute)


def make_scheduler(
    policy: Policy, prompt: str, args: argparse.Namespace, loop: ControlLoop
) -> ActionScheduler:
    return schedule(policy, prompt, scheduling(args), loop)
