"""The `rig` command. It wires the layers together per subcommand and imports them lazily, so that
`rig doctor` does not load torch and `rig --version` loads nothing."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hardware.profile import TASKS
from rig import __version__
from rig.commands.counts import non_negative_float, non_negative_int, positive_float, positive_int
from rig.commands.parser import RigParser
from rig.episode_time import DEFAULT_EPISODE_S, TWIN_DEMONSTRATION_S
from rig.paths import data_dir

if TYPE_CHECKING:
    from hardware.sim.twin import Twin

DEFAULT_PROFILE = "aloha-sim"
DESCRIPTION = (
    "Record, train and run ALOHA-style robot arms, or their simulated twin. Plain `rig` opens the "
    "terminal app; `rig record`, `rig train` and `rig run` do the same from the command line."
)
PROFILE_HELP = "the rig profile: aloha-sim (the simulated twin), aloha (real hardware) or a TOML file"
CALIBRATION_HELP = "where the arms' calibrations are kept (default: the profile's folder in the data dir)"
SIM_CHECK_S = 1.0  # how often `rig sim` looks for problems in its servo chains


def _sim(args: argparse.Namespace) -> int:
    """Serve the twin standalone: ports and serials as `key value` lines, then run until interrupted."""

    from hardware.profile import load_profile
    from hardware.sim.twin import Twin
    from rig.app.record import with_scene

    profile = with_scene(load_profile(args.profile), args.task, twin_required=True)
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
        _serve_twin(twin, stop, args.duration)
        print(f"stopped at simulated time {twin.world.time:.3f} s", flush=True)
    return 0


def _serve_twin(twin: Twin, stop: threading.Event, duration: float | None) -> None:
    """Wait for ^C (or the duration), saying on stderr whatever goes wrong in a servo chain."""
    deadline = None if duration is None else time.monotonic() + duration
    while not stop.is_set():
        left = SIM_CHECK_S if deadline is None else min(SIM_CHECK_S, deadline - time.monotonic())
        if left <= 0:
            return
        stop.wait(left)
        for problem in twin.take_problems():
            print(f"rig sim: {problem}", file=sys.stderr, flush=True)


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


def default_store_dir() -> Path:
    return data_dir() / "store"


def _tui(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(args.profile, args.store, args.task)


def _record(args: argparse.Namespace) -> int:
    from rig.commands.record import RecordPlan, run_record

    plan = RecordPlan(
        args.task,
        args.episodes,
        args.episode_time,
        args.reset_time,
        args.countdown,
        successful_only=args.successful_only,
        retries=args.retries,
    )
    cameras = args.cameras.split(",") if args.cameras else None
    return run_record(
        args.profile, plan, args.store, args.calibration_dir, sys.stdout, args.scene, cameras, args.camera_hz
    )


def _episodes(args: argparse.Namespace) -> int:
    from rig.commands import episodes

    if args.command == "episodes":
        return episodes.list_episodes(args.store, sys.stdout)
    if args.command == "show":
        shown = episodes.show_episode(args.store, args.episode, args.png, sys.stdout)
        if shown or args.video is None:
            return shown
        return episodes.save_video(args.store, args.episode, args.video, args.video_out, sys.stdout)
    if args.command == "delete":
        return episodes.delete_episode(args.store, args.episode, args.yes, sys.stdout)
    if args.command == "mark":
        return episodes.mark_episode(args.store, args.episode, args.outcome, args.note, sys.stdout)
    if args.command == "rebuild-catalogue":
        return episodes.rebuild_catalogue(args.store, sys.stdout)
    return episodes.replay_episode(args.profile, args.store, args.episode, sys.stdout)


def _interop(args: argparse.Namespace) -> int:
    from recorder.lerobot import (
        ExportSettings,
        ExportSummary,
        ImportSummary,
        LeRobotFormatError,
        export_lerobot,
        import_lerobot,
    )
    from recorder.store import Store

    summary: ExportSummary | ImportSummary
    try:
        if args.command == "export":
            store = Store(args.store, create=False, lock=False)
            settings = ExportSettings(timestamps=args.timestamps)
            summary = export_lerobot(
                store, args.out, args.episode, include_interrupted=args.include_interrupted, settings=settings
            )
        else:
            with Store(args.store) as target:
                summary = import_lerobot(target, args.dataset, task=args.task)
    except (LeRobotFormatError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"rig {args.command}: {error}", file=sys.stderr)
        return 1
    print(summary.describe())
    if isinstance(summary, ExportSummary) and summary.losses:
        print(
            f"rig export: {len(summary.losses)} warning(s) above: the store lost data its catalogue lists",
            file=sys.stderr,
        )
        return 1
    return 0


def _bench_record(args: argparse.Namespace) -> int:
    from recorder.bench import bench_reader, bench_record

    if args.what == "reader":
        print(bench_reader(args.store, args.windows))
    else:
        print(bench_record(args.cameras, args.width, args.height, args.fps, args.seconds))
    return 0


def _bench_policy(args: argparse.Namespace) -> int:
    import dataclasses

    from policy.bench import PolicyBenchSettings, bench_policy

    names = [field.name for field in dataclasses.fields(PolicyBenchSettings) if hasattr(args, field.name)]
    values = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    try:
        print(bench_policy(PolicyBenchSettings(**values)))
    except ValueError as error:  # an unknown config, a bad setting, or a run refused as too slow here
        print(f"rig bench policy: {error}", file=sys.stderr)
        return 2
    return 0


def _bench_autonomy(args: argparse.Namespace) -> int:
    from policy.bench_autonomy import AutonomyBenchSettings, bench_autonomy

    try:
        names = ("checkpoint", "delay_ticks", "ticks", "execute", "device", "seed")
        print(bench_autonomy(AutonomyBenchSettings(**{name: getattr(args, name) for name in names})))
    except ValueError as error:  # a bad setting or checkpoint, or execute beyond the policy's horizon
        print(f"rig bench autonomy: {error}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = RigParser(prog="rig", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("sim", help="serve the simulated twin's servo ports and cameras")
    sim.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    sim.add_argument("--task", choices=TASKS, help="the scene (default: the profile's)")
    sim.add_argument(
        "--seed", type=int, default=None, help="object placement seed (default: a new one each run)"
    )
    sim.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help="stop after this many seconds (default: run until ^C)",
    )
    sim.set_defaults(run=_sim)

    doctor = commands.add_parser("doctor", help="check every device the profile names")
    doctor.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    doctor.set_defaults(run=_doctor)

    teleop = commands.add_parser("teleop", help="headless teleoperation with a live status line")
    teleop.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    teleop.add_argument(
        "--seconds", type=positive_float, help="stop after this long on the rig clock (default: at ^C)"
    )
    teleop.add_argument("--task", choices=TASKS, help="the twin operator's task (default: the profile's)")
    teleop.add_argument("--calibration-dir", type=Path, default=None, help=CALIBRATION_HELP)
    teleop.add_argument(
        "--no-cameras",
        dest="cameras",
        action="store_false",
        help="do not stream cameras (the twin then renders nothing)",
    )
    teleop.set_defaults(run=_teleop)

    calibrate = commands.add_parser("calibrate", help="find homing offsets and joint ranges per arm")
    calibrate.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    calibrate.add_argument("--arm", action="append", help="only this arm (repeatable); default: all")
    calibrate.add_argument("--redo", action="store_true", help="calibrate again arms that have a calibration")
    calibrate.add_argument("--calibration-dir", type=Path, default=None, help=CALIBRATION_HELP)
    calibrate.set_defaults(run=_calibrate)

    bench = commands.add_parser("bench", help="benchmarks")
    what = bench.add_subparsers(dest="what", required=True)
    bench_loop = what.add_parser("loop", help="period error, overruns and time per tick of the control loop")
    bench_loop.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    bench_loop.add_argument("--steps", type=positive_int, default=3000, help="control ticks to time")
    bench_loop.set_defaults(run=_bench)
    bench_teleop = what.add_parser("teleop", help="success rate of scripted teleop episodes on the twin")
    bench_teleop.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    bench_teleop.add_argument("--episodes", type=positive_int, default=20, help="episodes to run")
    bench_teleop.add_argument("--task", choices=TASKS, help="the twin's task (default: the profile's)")
    bench_teleop.set_defaults(run=_bench)
    bench_record = what.add_parser("record", help="encode synthetic camera streams as recording would")
    bench_record.add_argument("--cameras", type=positive_int, default=3, help="camera streams")
    bench_record.add_argument("--width", type=positive_int, default=640, help="frame width in pixels")
    bench_record.add_argument("--height", type=positive_int, default=480, help="frame height in pixels")
    bench_record.add_argument("--fps", type=positive_float, default=50.0, help="frames a second")
    bench_record.add_argument("--seconds", type=positive_float, default=10.0, help="length of each stream")
    bench_record.set_defaults(run=_bench_record)
    bench_reader = what.add_parser("reader", help="random training windows per second from a store")
    bench_reader.add_argument("--store", type=Path, default=default_store_dir(), help="the episode store")
    bench_reader.add_argument("--windows", type=positive_int, default=200, help="training windows to read")
    bench_reader.set_defaults(run=_bench_record)
    bench_policy = what.add_parser("policy", help="π0's size, chunk latency and training throughput")
    bench_policy.add_argument("--config", default="pi0-small", help="pi0, pi0-small or pi0-tiny")
    bench_policy.add_argument(
        "--cameras", type=int, default=None, help="image slots (default: as rig train's default views)"
    )
    bench_policy.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="the vision tower's side (default: rig train's for its default views; pi0: 224)",
    )
    for flag, default in (("--batch", 1), ("--repeats", 10)):
        bench_policy.add_argument(
            flag, type=positive_int, default=default, help=f"{flag[2:]} (default {default})"
        )
    bench_policy.add_argument(
        "--train-batch", type=int, default=None, help="0: no training figure (default: rig train's batch)"
    )
    bench_policy.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the default recipe's step, as rig train does for a long run (default: yes)",
    )
    bench_policy.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when there is one")
    bench_policy.add_argument(
        "--dtype", choices=("fp32", "bf16", "bf16-weights"), help="default: bf16 on CUDA; the CPU runs fp32"
    )
    bench_policy.add_argument("--allow-slow", action="store_true", help="run pi0 on the CPU anyway")
    bench_policy.add_argument("--params-only", action="store_true", help="count parameters, run nothing")
    bench_policy.set_defaults(run=_bench_policy)
    autonomy = what.add_parser("autonomy", help="chunk strategies (rtc, sync, naive, ensemble) on a π0")
    autonomy.add_argument("--checkpoint", type=Path, help="default: pi0-tiny trained 1 step, synthetic data")
    for flag, default, meaning in (
        ("--delay-ticks", 10, "simulated inference latency in control ticks"),
        ("--ticks", 500, "control ticks to run"),
        ("--execute", 25, "actions executed from each chunk"),
    ):
        autonomy.add_argument(flag, type=positive_int, default=default, help=meaning)
    autonomy.add_argument("--seed", type=int, default=0, help="noise and placement seed")
    autonomy.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when there is one")
    autonomy.set_defaults(run=_bench_autonomy)

    def with_store(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--store", type=Path, default=default_store_dir(), help="the episode store (a folder)"
        )
        return sub

    tui = with_store(commands.add_parser("tui", help="the terminal app: record, train and run (also: `rig`)"))
    tui.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    tui.add_argument("--task", default="", help="prefills the task field (on the twin: its task's name)")
    tui.set_defaults(run=_tui)

    record = with_store(commands.add_parser("record", help="teleoperate and record episodes"))
    record.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    record.add_argument("--task", required=True, help="the task instruction stored with every episode")
    record.add_argument("--episodes", type=positive_int, default=1, help="episodes to record")
    record.add_argument(
        "--episode-time",
        type=positive_float,
        default=None,
        help=f"seconds per episode on the rig clock (default: on the twin, its demonstration's length, "
        f"{TWIN_DEMONSTRATION_S:g} s; on hardware {DEFAULT_EPISODE_S:g} s)",
    )
    record.add_argument(
        "--reset-time",
        type=non_negative_float,
        default=3.0,
        help="seconds to reset the scene between episodes",
    )
    record.add_argument(
        "--countdown", type=non_negative_float, default=3.0, help="seconds of countdown before each episode"
    )
    record.add_argument("--calibration-dir", type=Path, default=None, help=CALIBRATION_HELP)
    record.add_argument(
        "--scene", choices=TASKS, default=None, help="on the twin: the task's scene (default: the profile's)"
    )
    record.add_argument(
        "--cameras",
        default=None,
        metavar="NAME[,NAME]",
        help="record only these cameras of the profile (default: all it enables)",
    )
    record.add_argument(
        "--camera-hz",
        type=positive_float,
        default=None,
        help="record each camera at most this many frames a second (default: the profile's fps)",
    )
    record.add_argument(
        "--successful-only",
        action="store_true",
        help="on the twin: discard an episode that failed or was flagged and record it again",
    )
    record.add_argument(
        "--retries",
        type=non_negative_int,
        default=3,
        help="with --successful-only: tries per episode after the first",
    )
    record.set_defaults(run=_record)

    with_store(commands.add_parser("episodes", help="list the recorded episodes")).set_defaults(run=_episodes)
    with_store(
        commands.add_parser(
            "rebuild-catalogue", help="rebuild a lost or damaged catalogue.db from the episode folders"
        )
    ).set_defaults(run=_episodes)
    show = with_store(commands.add_parser("show", help="an episode's summary and a plot of its joints"))
    show.add_argument("episode", type=int)
    show.add_argument(
        "--png", type=Path, default=None, help="where to write the plot (default episode-ID.png)"
    )
    show.add_argument("--video", metavar="CAMERA", help="also write this camera's video (default: none)")
    show.add_argument(
        "--video-out", type=Path, help="where --video writes it (default episode-ID-CAMERA.mp4)"
    )
    show.set_defaults(run=_episodes)
    delete = with_store(commands.add_parser("delete", help="delete an episode"))
    delete.add_argument("episode", type=int)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(run=_episodes)
    mark = with_store(commands.add_parser("mark", help="set an episode's outcome or notes"))
    mark.add_argument("episode", type=int)
    mark.add_argument("--outcome", choices=("success", "failure"), help="the verdict (default: unchanged)")
    mark.add_argument("--note", help="the operator's notes on the episode (default: unchanged)")
    mark.set_defaults(run=_episodes)
    replay = with_store(
        commands.add_parser("replay", help="drive the followers through an episode's actions")
    )
    replay.add_argument("episode", type=int)
    replay.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    replay.set_defaults(run=_episodes)

    export = with_store(commands.add_parser("export", help="export episodes as a LeRobot v3 dataset"))
    export.add_argument("--format", choices=("lerobot",), default="lerobot", help="the dataset format")
    export.add_argument("out", type=Path)
    export.add_argument(
        "--episode", type=int, action="append", help="only this episode (repeatable; default: all)"
    )
    export.add_argument(
        "--include-interrupted", action="store_true", help="also episodes cut short by a crash or ^C"
    )
    export.add_argument(
        "--timestamps",
        choices=("recorded", "grid"),
        default="recorded",
        help="recorded: each step's time on the rig clock; grid: frame_index/fps, what LeRobot's "
        "index-based video readers need for recordings from real hardware",
    )
    export.set_defaults(run=_interop)
    imported = with_store(commands.add_parser("import", help="import a LeRobot v3 dataset into the store"))
    imported.add_argument("--format", choices=("lerobot",), default="lerobot", help="the dataset format")
    imported.add_argument("dataset", type=Path)
    imported.add_argument("--task", default=None, help="task text when the dataset has none (default: none)")
    imported.set_defaults(run=_interop)

    from rig.commands.demo import add_demo_parser
    from rig.commands.eval import add_eval_parser
    from rig.commands.run import add_run_parser
    from rig.commands.runs import add_runs_parser
    from rig.commands.serve import add_serve_parser
    from rig.commands.train import add_train_parser

    add_train_parser(commands, default_store_dir())
    add_runs_parser(commands, default_store_dir())
    add_serve_parser(commands)
    add_run_parser(commands, DEFAULT_PROFILE, default_store_dir())
    add_eval_parser(commands, DEFAULT_PROFILE, default_store_dir())
    add_demo_parser(commands, DEFAULT_PROFILE, data_dir())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`rig SUBCOMMAND …`; plain `rig` opens the terminal app on the default profile and store."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv or ["tui"])
    run: Callable[[argparse.Namespace], int] = args.run
    from hardware.dynamixel.errors import DynamixelError
    from hardware.profile import ProfileError
    from hardware.realsense import CameraError
    from recorder.errors import NotInCatalogueError, StoreError, StoreFullError

    try:
        return run(args)
    except ProfileError as exc:  # a one-line error, not a traceback: the message names file and key
        print(f"rig {args.command}: {exc}", file=sys.stderr)
        return 2
    except (StoreError, StoreFullError, NotInCatalogueError) as exc:  # each says what to do
        print(f"rig {args.command}: {exc}", file=sys.stderr)
        return 1
    except (DynamixelError, CameraError) as exc:  # a device missing, busy or silent: what to check
        profile = getattr(args, "profile", DEFAULT_PROFILE)
        print(
            f"rig {args.command}: {exc} (`rig doctor --profile {profile}` checks every device)",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:  # `rig show … | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
