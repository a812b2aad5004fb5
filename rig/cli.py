"""The `rig` command. It wires the layers together per subcommand and imports them lazily, so that
`rig doctor` does not load torch and `rig --version` loads nothing."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from rig import __version__

DEFAULT_PROFILE = "aloha-sim"


def _sim(args: argparse.Namespace) -> int:
    """Serve the twin standalone: ports and serials as `key value` lines, then run until interrupted."""
    import dataclasses

    from hardware.profile import load_profile
    from hardware.sim.twin import Twin

    profile = load_profile(args.profile)
    if profile.twin is None:
        print(
            f"rig sim: profile {profile.name!r} is real hardware; use a twin profile such as aloha-sim",
            file=sys.stderr,
        )
        return 2
    if args.task:
        profile = dataclasses.replace(profile, twin=dataclasses.replace(profile.twin, task=args.task))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Twin(profile, lockstep=False, seed=args.seed) as twin:
        for name, port in twin.ports.items():
            print(f"{name} {port}")
        for name, camera in twin.cameras.items():
            print(f"camera {name} {camera.serial}")
        print(f"task {twin.world.task}")
        print("ready", flush=True)
        stop.wait(args.duration)
        print(f"stopped at simulated time {twin.world.time:.3f} s", flush=True)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from hardware.devices import open_devices
    from hardware.profile import load_profile
    from rig.doctor import Status, diagnose, healthy

    profile = load_profile(args.profile)
    with open_devices(profile) as devices:
        findings = diagnose(devices)
    table = Table(title=f"rig doctor: {profile.name} ({profile.description or profile.source})")
    for column in ("device", "item", "status", "detail"):
        table.add_column(column, overflow="fold")
    colors = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}
    for f in findings:
        table.add_row(f.device, f.item, f"[{colors[f.status]}]{f.status.value}[/]", f.detail)
    console = Console(width=max(Console().width, 140))
    console.print(table)
    if not healthy(findings):
        failed = sum(f.status is Status.FAIL for f in findings)
        console.print(
            f"[bold red]{failed} problem(s)[/]: fix the rows marked FAIL, then run `rig doctor` again."
        )
        return 1
    console.print("[green]all devices present[/]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rig", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("sim", help="serve the simulated twin's servo ports and cameras")
    sim.add_argument("--profile", default=DEFAULT_PROFILE)
    sim.add_argument("--task", choices=("transfer_cube", "insertion"))
    sim.add_argument("--seed", type=int, default=None, help="object placement seed")
    sim.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run until ^C)"
    )
    sim.set_defaults(run=_sim)

    doctor = commands.add_parser("doctor", help="check every device the profile names")
    doctor.add_argument("--profile", default=DEFAULT_PROFILE)
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    from hardware.profile import ProfileError

    try:
        return run(args)
    except ProfileError as exc:  # a one-line error, not a traceback: the message names file and key
        print(f"rig {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
