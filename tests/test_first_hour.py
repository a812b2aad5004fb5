"""A new user's first hour (issue 17): careless arguments get one line, not a traceback or a silent
no-op; every option's help says what it does and its default; repeated events are counted."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import pytest

from recorder.catalogue import Segment
from recorder.store import Store
from rig.cli import build_parser, main
from rig.episode_time import TWIN_DEMONSTRATION_S
from rig.event_log import EventLog, RepeatSummary


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run `rig ARGV`, expecting a refusal; returns its last stderr line (there is no traceback)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's refusals
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def empty_store(tmp_path: Path) -> Path:
    Store(tmp_path / "store").close()
    return tmp_path / "store"


@pytest.mark.parametrize(
    "argv",
    [
        ["record", "--task", "x", "--episodes", "-1"],
        ["record", "--task", "x", "--episodes", "0"],
        ["record", "--task", "x", "--episode-time", "0"],
        ["eval", "--checkpoint", "run", "--episodes", "-1"],
        ["train", "--steps", "-5"],
        ["train", "--batch-size", "0"],
        ["train", "--eval-episodes", "0"],
        ["bench", "teleop", "--episodes", "0"],
        ["run", "--checkpoint", "run", "--seconds", "-1"],
    ],
)
def test_a_count_below_its_least_is_refused_before_anything_runs(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = one_line_error(capsys, *argv, *(["--out", str(tmp_path / "new")] if argv[0] == "train" else []))
    assert "error: argument" in line and ("is not" in line)
    assert not (tmp_path / "new").exists()  # no empty run folder


def test_a_store_that_is_missing_or_a_file_gets_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = one_line_error(capsys, "episodes", "--store", str(tmp_path / "fresh"))
    assert "no episodes recorded here yet" in line and "rig record" in line
    (tmp_path / "file").write_text("")
    for argv in (["episodes"], ["record", "--task", "x"]):
        line = one_line_error(capsys, *argv, "--store", str(tmp_path / "file"))
        assert "is a file, not a store folder" in line


@pytest.mark.parametrize(
    "argv", [["show", "7"], ["delete", "7", "--yes"], ["mark", "7", "--outcome", "success"], ["replay", "7"]]
)
def test_an_unknown_episode_id_gets_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], empty_store: Path
) -> None:
    assert "no episode 7" in one_line_error(capsys, *argv, "--store", str(empty_store))


def test_export_of_an_unknown_episode_gets_one_line(
    capsys: pytest.CaptureFixture[str], empty_store: Path, tmp_path: Path
) -> None:
    line = one_line_error(
        capsys, "export", str(tmp_path / "out"), "--episode", "7", "--store", str(empty_store)
    )
    assert "no episode 7" in line


def test_a_hardware_profile_without_its_devices_gets_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for argv in (["record", "--task", "x"], ["tui"]):
        line = one_line_error(capsys, *argv, "--profile", "aloha", "--store", str(tmp_path / "s"))
        assert "does not exist" in line and "rig doctor --profile aloha" in line


def test_a_closed_pipe_ends_quietly(monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> None:
    """`rig episodes | head`: the reader left; no BrokenPipeError traceback."""

    def closed(*_: object) -> int:
        raise BrokenPipeError

    monkeypatch.setattr("rig.commands.episodes.list_episodes", closed)
    with monkeypatch.context() as patched:
        patched.setattr("os.dup2", lambda *_: None)  # the test's own stdout stays open
        assert main(["episodes", "--store", str(empty_store)]) == 0


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [(name, sub) for action in actions for name, sub in action.choices.items()]


def _options(parser: argparse.ArgumentParser, path: str = "rig") -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            either = any(action in group._group_actions for group in parser._mutually_exclusive_groups)
            if not either:  # one of a required pair (--checkpoint or --policy): no default to state
                found.append((f"{path} {action.option_strings[0]}", action))
    return found


def test_every_option_says_what_it_does_and_its_default() -> None:
    parser = build_parser()
    unsaid = []
    for name, action in _options(parser):
        formatter = parser._get_formatter()
        text = formatter._expand_help(action) if action.help else ""
        switch = action.nargs == 0  # a flag: off unless given
        if not text or not (switch or "default" in text or action.required):
            unsaid.append(name)
    assert not unsaid, unsaid
    assert (build_parser().description or "").startswith("Record, train and run")


def test_record_help_states_the_twins_episode_time() -> None:
    from hardware.profile import TASKS, load_profile
    from hardware.sim.twin import Twin
    from rig.commands.record import with_scene
    from rig.operator import plan_demonstration

    for task in TASKS:
        with Twin(with_scene(load_profile("aloha-sim"), task), lockstep=True, seed=0) as twin:
            demo = plan_demonstration(twin.world.task, twin.world.object_poses())
            assert demo.duration == pytest.approx(TWIN_DEMONSTRATION_S)
    (record,) = [sub for name, sub in _subcommands(build_parser()) if name == "record"]
    help_text = " ".join(record.format_help().split())
    assert f"its demonstration's length, {TWIN_DEMONSTRATION_S:g} s" in help_text


def test_the_train_help_defaults_are_train_settings_defaults() -> None:
    import dataclasses

    from policy.train import TrainSettings
    from rig.commands.train_defaults import DEFAULTS

    defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    assert {name: defaults[name] for name in dataclasses.asdict(DEFAULTS)} == dataclasses.asdict(DEFAULTS)


def test_a_repeated_event_is_one_line_with_a_count() -> None:
    log = EventLog(kept=5)
    log.add(1.0, "fault: follower_left: no reply")
    for tick in range(50):
        log.add(2 + tick / 50, "e-stop: holding")
        log.add(2 + tick / 50, f"speed: waist held to {0.01 + tick / 1e4:.4f} per tick")
    lines = log.describe()
    assert len(lines) == 3 and "fault" in lines[0]
    assert "e-stop: holding  ×50" in lines[1] and "s  " in lines[1]  # seconds labeled
    summary = RepeatSummary()
    printed = [event for event in ["speed: waist held to 0.03 per tick"] * 2544 if summary.first(event)]
    assert len(printed) == 1 and summary.summary(1.0) == ["speed: waist held to 0.03 per tick (×2543 in 1 s)"]
    assert summary.first("speed: waist held to 0.03 per tick") is False  # still repeating
    assert summary.summary(1.0) and summary.summary(1.0) == []  # quiet for a second: printed again next time
    assert summary.first("speed: waist held to 0.03 per tick")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_moves_every_second_while_a_step_takes_longer() -> None:
    from policy.progress import Progress

    terminal = Terminal()
    progress = Progress(total=100, stream=terminal, redraw_s=0.02)
    progress.advance(1)
    progress.advance(2)
    deadline = time.monotonic() + 30
    while terminal.getvalue().count("\r") < 3 and time.monotonic() < deadline:  # no step meanwhile
        time.sleep(0.01)
    progress.close()
    frames = terminal.getvalue().split("\r")
    assert len(frames) >= 4 and "step 2/100" in frames[-1] and "eta" in frames[-1] and "steps/s" in frames[-1]
    log = io.StringIO()
    progress = Progress(total=10, stream=log, redraw_s=0.0)
    for step in range(1, 11):
        progress.advance(step)
    progress.close()
    assert log.getvalue().count("\n") == 10  # a line per step that moved, none repeated


def test_ctrl_c_while_recording_keeps_the_data_and_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(session, plan, say, commands):  # type: ignore[no-untyped-def]
        session.recorder.begin(plan.task)
        step = session.loop.wait_for_step()
        while step.index < 5:  # a few steps recorded, then ^C
            step = session.loop.wait_for_step(step.index, timeout=30)
        raise KeyboardInterrupt

    monkeypatch.setattr("rig.commands.record.record_episodes", interrupted)
    line = one_line_error(capsys, "record", "--task", "x", "--store", str(tmp_path / "s"))
    assert line.startswith("rig record: stopped by ^C; the data is kept: 1 episode(s)")
    with Store(tmp_path / "s", create=False) as store:
        (episode,) = store.catalogue.episodes()
        assert episode.status == "interrupted" and episode.notes == "stopped by ^C while recording"
        assert (episode.steps or 0) > 0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthetic_store import write_synthetic_store

    root = write_synthetic_store(tmp_path_factory.mktemp("recorded") / "store", episodes=1, steps=30)
    with Store(root) as store:
        store.catalogue.set_outcome(1, "failure")
        store.catalogue.set_tags(1, ("autonomous", "night"))
        store.catalogue.set_notes(1, "the cube slipped")
        store.catalogue.add_segments(1, [Segment("intervention", 10, 20)])
    return root


def test_export_then_import_keeps_outcome_tags_notes_and_segments(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path / "dataset"), "--store", str(recorded)]) == 0
    assert main(["import", str(tmp_path / "dataset"), "--store", str(tmp_path / "back")]) == 0
    with Store(recorded, lock=False) as before, Store(tmp_path / "back", lock=False) as after:
        (old,), (new,) = before.catalogue.episodes(), after.catalogue.episodes()
        assert (new.outcome, new.tags, new.notes) == ("failure", ("autonomous", "night"), "the cube slipped")
        assert new.twin_reward == old.twin_reward
        spans = [
            [(s.label, s.start_step, s.end_step) for s in c.segments(1)]
            for c in (before.catalogue, after.catalogue)
        ]
        assert spans[0] and spans[0] == spans[1]


def test_show_writes_a_cameras_video(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recorder.video import VideoReader

    target = tmp_path / "top.mp4"
    argv = ["show", "1", "--store", str(recorded), "--png", str(tmp_path / "plot.png")]
    assert main([*argv, "--video", "cam_high", "--video-out", str(target)]) == 0
    assert f"video cam_high: {target} (30 frames)" in capsys.readouterr().out
    with VideoReader(target) as reader:
        assert len(reader) == 30
    assert "its cameras: cam_high" in one_line_error(capsys, *argv, "--video", "nope")


def test_runs_lists_checkpoints_with_loss_and_evaluations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from policy.progress import EvalResult, LossLog, append_eval

    run = tmp_path / "runs" / "20260101-120000-pi0-tiny"
    for step in (4, 8):
        folder = run / "checkpoints" / f"{step:08d}"
        folder.mkdir(parents=True)
        (folder / "checkpoint.json").write_text(
            json.dumps({"config": {"name": "pi0-tiny"}, "train": {"steps": 8}})
        )
    (run / "checkpoints" / "00000012.partial").mkdir()  # an unfinished save is no checkpoint
    log = LossLog(run)
    for step, loss in ((2, 1.5), (4, 1.25), (6, 1.0), (8, 0.75)):
        log.append(step=step, loss=loss, lr=1e-3, grad_norm=1.0, step_s=0.1, samples_per_s=40.0)
    append_eval(run, EvalResult(8, "transfer_cube", 10, 3, 0.1, 0.6, 0, "rtc", 60.0))
    assert main(["runs", "--store", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("20260101-120000-pi0-tiny  (pi0-tiny, asked for 8 steps)")
    assert "step       4  loss   1.2500  eval -" in lines[1]
    assert "step       8  loss   0.7500  eval 3/10 on transfer_cube (30%" in lines[2] and len(lines) == 3
    assert "no training runs" in one_line_error(capsys, "runs", "--store", str(tmp_path / "none"))


def test_the_install_script_reports_progress_and_expects_lerobots_left_out_pins() -> None:
    import subprocess

    script = Path(__file__).parent.parent / "scripts" / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    calls = [line.strip() for line in text.splitlines() if "pip_install " in line and "()" not in line]
    assert calls and text.count('"${pip[@]}"') == 1  # every install goes through pip_install's heartbeat
    lerobot = [line for line in calls if "lerobot" in line or "datasets" in line or '".[dev]"' in line]
    assert len(lerobot) == 3 and all("--no-warn-conflicts" in line for line in lerobot)
