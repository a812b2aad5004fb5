"""The command-line side of autonomous mode, shared by `rig run` and `rig eval`: the arguments that
name a policy (a local checkpoint or a remote server) and how its chunks are scheduled, turned into a
`PolicySpec` (rig.app.policy). The operation itself is in rig.app.autonomy; both are imported when a
command runs, not when `rig --help` builds the parser."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rig.commands.counts import positive_float, positive_int

if TYPE_CHECKING:
    from policy.interface import Policy, PolicyInfo
    from rig.app.policy import PolicySpec


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint or --policy, and how chunks are scheduled."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint (or run folder) of `rig train`")
    source.add_argument("--policy", metavar="tcp://HOST:PORT", help="a `rig serve` policy server")
    parser.add_argument(
        "--server-key", type=Path, default=None, help="the server's public key (CurveZMQ; default: none)"
    )
    parser.add_argument(
        "--client-key", type=Path, default=None, help="this client's secret key (CurveZMQ; default: none)"
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=2.0, help="seconds to wait for a remote chunk"
    )
    parser.add_argument("--device", default=None, help="for --checkpoint: cpu or cuda (default: cuda if any)")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="paligemma_tokenizer.model for pi0 (default: none)"
    )
    parser.add_argument(
        "--strategy", choices=("rtc", "sync", "naive", "ensemble"), default="rtc", help="chunk scheduling"
    )
    parser.add_argument(
        "--execute", type=positive_int, help="actions executed per chunk (default: half the chunk)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and the twin's scenes)")


def policy_spec(args: argparse.Namespace) -> PolicySpec:
    """The policy the arguments of `add_policy_arguments` name."""
    from rig.app.autonomy import Scheduling
    from rig.app.policy import PolicySpec

    return PolicySpec(
        checkpoint=args.checkpoint,
        endpoint=args.policy,
        server_key=args.server_key,
        client_key=args.client_key,
        timeout_s=args.timeout,
        device=args.device,
        tokenizer=args.tokenizer,
        seed=args.seed,
        scheduling=Scheduling(strategy=args.strategy, execute=args.execute),
    )


def open_policy_or_explain(args: argparse.Namespace) -> tuple[Policy, PolicyInfo] | None:
    """The policy and what it is, or None after a one-line error (a bad checkpoint, no server)."""
    from rig.app.policy import PolicyUnavailableError, open_policy_and_info

    try:
        return open_policy_and_info(policy_spec(args))
    except PolicyUnavailableError as error:
        print(f"rig {args.command}: {error}", file=sys.stderr)
        return None
