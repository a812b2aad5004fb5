"""`rig serve`: a π0 checkpoint as a policy server for rigs (argument parsing; the work is in policy/)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve a π0 checkpoint to rigs over zmq (CurveZMQ with --keys)")
    serve.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint or run folder")
    serve.add_argument("--bind", default=None, help="zmq endpoint (default: tcp://127.0.0.1:5555)")
    serve.add_argument(
        "--keys",
        type=Path,
        default=None,
        help="CurveZMQ key folder, created with a client key when missing (default: no keys, loopback only)",
    )
    serve.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when there is one")
    serve.add_argument(
        "--tokenizer", type=Path, default=None, help="paligemma_tokenizer.model (for pi0; default: none)"
    )
    serve.add_argument(
        "--compile",
        action="store_true",
        help="compile the denoising step (CUDA graphs on a GPU) at start-up, before serving: faster chunks",
    )
    serve.add_argument(
        "--allow-insecure", action="store_true", help="serve beyond loopback without keys (trusted networks)"
    )
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import zmq

    from policy.checkpoint import CheckpointError
    from policy.infer import LocalPolicy
    from policy.server import (
        DEFAULT_BIND,
        InsecureBindError,
        PolicyServer,
        check_bind,
        return_freed_memory_to_the_os,
    )

    bind = args.bind or DEFAULT_BIND
    return_freed_memory_to_the_os()  # a burst of large requests must not stay resident
    try:
        check_bind(bind, args.keys, args.allow_insecure)  # before the minutes a large model takes to load
        policy = LocalPolicy.from_checkpoint(
            args.checkpoint, args.device, args.tokenizer, compile=args.compile
        )
        server = PolicyServer(policy, bind, args.keys, args.allow_insecure)
    except InsecureBindError as error:
        print(f"rig serve: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, ValueError, zmq.ZMQError) as error:
        print(f"rig serve: {error}", file=sys.stderr)
        return 1
    info = policy.info()
    print(f"serving {info.config} (step {info.step}, cameras {', '.join(info.cameras)}, "
          f"{info.action_horizon} actions per chunk) on {server.endpoint}")  # fmt: skip
    if server.keys is None:
        print("CurveZMQ off: any process that can reach the endpoint may connect")
    else:
        authorized = len(server.keys.authorized_keys())
        print(f"CurveZMQ on: clients need {server.keys.server_public}; "
              f"{authorized} authorized client key(s) in {server.keys.authorized}")  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print("ready; ^C stops", flush=True)
    with server:
        server.serve(stop)
    print("stopped", flush=True)
    return 0
