"""The `rig` command. It wires the layers together per subcommand and imports them lazily, so that
`rig doctor` does not load torch and `rig --version` loads nothing."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

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


def _teleop(args: argparse.Namespace) -> int:
    from rig.teleop import run_teleop

    return run_teleop(args.profile, args.seconds, args.task, args.calibration_dir, args.cameras, sys.stdout)


def _calibrate(args: argparse.Namespace) -> int:
    from rig.calibrate import cli_calibrate

    return cli_calibrate(args.profile, args.arm, args.redo, args.calibration_dir)


def _bench(args: argparse.Namespace) -> int:
    from hardware.profile import load_profile
    from rig.bench import bench_loop, bench_teleop

    profile = load_profile(args.profile)
    if args.what == "loop":
        print(bench_loop(profile, args.steps))
    else:
        print(bench_teleop(profile, args.episodes, args.task))
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

    teleop = commands.add_parser("teleop", help="headless teleoperation with a live status line")
    teleop.add_argument("--profile", default=DEFAULT_PROFILE)
    teleop.add_argument("--seconds", type=float, default=None, help="stop after this long on the rig clock")
    teleop.add_argument("--task", choices=("transfer_cube", "insertion"), help="the twin operator's task")
    teleop.add_argument("--calibration-dir", type=Path, default=None)
    teleop.add_argument(
        "--no-cameras",
        dest="cameras",
        action="store_false",
        help="do not stream cameras (the twin then renders nothing)",
    )
    teleop.set_defaults(run=_teleop)

    calibrate = commands.add_parser("calibrate", help="find homing offsets and joint ranges per arm")
    calibrate.add_argument("--profile", default=DEFAULT_PROFILE)
    calibrate.add_argument("--arm", action="append", help="only this arm (repeatable); default: all")
    calibrate.add_argument("--redo", action="store_true", help="calibrate again arms that have a calibration")
    calibrate.add_argument("--calibration-dir", type=Path, default=None)
    calibrate.set_defaults(run=_calibrate)

    bench = commands.add_parser("bench", help="benchmarks")
    what = bench.add_subparsers(dest="what", required=True)
    bench_loop = what.add_parser("loop", help="period error, overruns and time per tick of the control loop")
    bench_loop.add_argument("--profile", default=DEFAULT_PROFILE)
    bench_loop.add_argument("--steps", type=int, default=3000)
    bench_loop.set_defaults(run=_bench)
    bench_teleop = what.add_parser("teleop", help="success rate of scripted teleop episodes on the twin")
    bench_teleop.add_argument("--profile", default=DEFAULT_PROFILE)
    bench_teleop.add_argument("--episodes", type=int, default=20)
    bench_teleop.add_argument("--task", choices=("transfer_cube", "insertion"))
    bench_teleop.set_defaults(run=_bench)
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
