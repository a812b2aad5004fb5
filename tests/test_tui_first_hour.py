"""The app as a new user meets it (issue 17), through Textual's pilot on canned snapshots: ← records
again, a text field keeps its spaces, the Train screen's fields are labeled and its keys work after
Esc, `r` resumes a run of an earlier session, ctrl+q asks before stopping training, and at 80x24 the
Episodes table keeps the outcome column."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import test_tui_backend
from test_tui_app import SIZE, CannedBackend, synchronously
from test_tui_backend import until
from textual.widgets import DataTable

from policy.interface import PolicyInfo, PolicyObservation
from rig.app.warmup import ChunkTiming, needed_s
from tui.app import RigApp
from tui.backend import RigBackend, _Recent
from tui.screens.train import TrainScreen
from tui.train_job import TrainJob, TrainStatus
from tui.widgets.fields import Field

twin_backend = test_tui_backend.backend  # the app's backend on the twin


def fake_run(store: Path, step: int, steps: int) -> Path:
    run = store / "runs" / "20260101-120000-pi0-tiny"
    folder = run / "checkpoints" / f"{step:08d}"
    folder.mkdir(parents=True)
    meta = {"config": {"name": "pi0-tiny"}, "train": {"steps": steps, "batch_size": 4}}
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    return run


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[TrainJob, bool]]:
    """TrainJob launches recorded instead of starting `rig train`."""
    calls: list[tuple[TrainJob, bool]] = []
    monkeypatch.setattr(TrainJob, "_launch", lambda job, resume: calls.append((job, resume)))
    return calls


@synchronously
async def test_left_discards_and_records_again(tmp_path: Path) -> None:
    backend = CannedBackend()
    async with RigApp(backend, tmp_path).run_test(size=SIZE) as pilot:
        await pilot.press("left")
        assert backend.calls == ["rerecord", "start_episode"]


@synchronously
async def test_space_in_a_focused_text_field_is_a_space(tmp_path: Path) -> None:
    backend = CannedBackend()
    app = RigApp(backend, tmp_path, task="pick")
    async with app.run_test(size=SIZE) as pilot:
        field = app.screen.query_one("#task", Field)
        await pilot.press("tab")  # into the field, as the help says
        assert field.has_focus
        await pilot.press("space", "u", "p")
        assert field.value == "pick up" and "estop" not in backend.calls
        await pilot.press("escape", "space")  # out of the field: the space bar is the e-stop again
        assert field.value == "pick up" and backend.calls == ["estop"]


@synchronously
async def test_train_fields_are_labeled_and_s_starts_after_esc(
    tmp_path: Path, launched: list[tuple[TrainJob, bool]]
) -> None:
    async with RigApp(CannedBackend(), tmp_path).run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause(0.3)
        screen = pilot.app.screen
        assert isinstance(screen, TrainScreen)
        labels = [str(label.render()) for label in screen.query("#settings Label")]
        assert labels == ["model", "steps", "batch"]
        assert all(label.region.width > 0 for label in screen.query("#settings Label"))
        steps = screen.query_one("#steps", Field)
        steps.focus()
        steps.value = "50"
        await pilot.press("escape", "s")
        ((job, resume),) = launched
        assert not resume and job.steps == 50


@synchronously
async def test_r_resumes_a_run_of_an_earlier_session_with_its_own_settings(
    tmp_path: Path, launched: list[tuple[TrainJob, bool]]
) -> None:
    run = fake_run(tmp_path, step=4, steps=300)
    async with RigApp(CannedBackend(), tmp_path).run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        screen = pilot.app.screen
        assert isinstance(screen, TrainScreen)
        for _ in range(100):
            if screen.job is not None:
                break
            await pilot.pause(0.1)
        assert screen.query_one("#steps", Field).value == "300"
        await pilot.press("r")
        ((job, resume),) = launched
        assert resume and job.run_dir == run
        command = job.command(resume=True)
        assert "--resume" in command and "--batch-size" not in command and "300" in command


class RunningJob:
    def __init__(self) -> None:
        self.closed = False

    def status(self) -> TrainStatus:
        return TrainStatus("running", 3, 50, None, None, None, None, (), (), None, None, Path("run"))

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@synchronously
async def test_ctrl_q_asks_before_stopping_a_training_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = RigApp(CannedBackend(), tmp_path)
    exits: list[bool] = []
    monkeypatch.setattr(app, "exit", lambda *_, **__: exits.append(True))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause(0.2)
        assert app._train is not None
        app._train.job = RunningJob()  # type: ignore[assignment]
        await pilot.press("ctrl+q")
        assert not exits
        await pilot.press("ctrl+q")
        assert exits == [True]


@synchronously
async def test_the_episodes_table_keeps_the_outcome_column_at_80x24(tmp_path: Path) -> None:
    from synthetic_store import write_synthetic_store

    from recorder.store import Store

    store = write_synthetic_store(tmp_path / "store", episodes=1, steps=10, task="transfer " * 12)
    with Store(store) as opened:
        opened.catalogue.set_outcome(1, "success")
    async with RigApp(CannedBackend(), store).run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.pause(0.5)
        table = pilot.app.screen.query_one(DataTable)
        columns = list(table.columns.values())
        labels = [str(c.label) for c in columns]
        outcome = labels.index("outcome") if "outcome" in labels else labels.index("outcome ▲")
        right = sum(c.get_render_width(table) for c in columns[: outcome + 1])
        assert right <= table.size.width
        assert "success" in pilot.app.export_screenshot().replace("&#160;", " ")


def test_the_event_log_counts_the_e_stop_holding_instead_of_repeating_it() -> None:
    recent = _Recent()
    recent.say(1.0, "fault: follower_left stopped answering")
    for tick in range(250):  # five seconds of e-stop
        recent.say(2 + tick / 50, "e-stop: holding")
    events = recent.snapshot()[3]
    assert len(events) == 2 and "fault" in events[0] and "×250" in events[1]


def test_train_status_follows_checkpoints_and_the_progress_bar(tmp_path: Path) -> None:
    run = fake_run(tmp_path, step=30, steps=50)
    job = TrainJob(tmp_path, run, "pi0-tiny", 50)
    assert job.status().step == 30  # no loss.csv row yet: the checkpoint says where the run is

    class Child:
        stdout = io.StringIO("training pi0-tiny\nstep 37/50 ▕██▏ 1.00 steps/s | loss 0.5 | eta 0m13s\n")

        def poll(self) -> None:
            return None

    job._process = Child()  # type: ignore[assignment]
    job._read(Child())  # type: ignore[arg-type]
    status = job.status()
    assert status.step == 37 and status.progress is not None and "eta 0m13s" in status.progress
    assert status.lines == ("training pi0-tiny",)  # the bar's lines do not push the output away


class SlowPolicy:
    """A policy this machine runs slower than the rig needs: 0.3 s a chunk of 10 actions at 50 Hz."""

    def __init__(self) -> None:
        self.calls = 0

    def info(self) -> PolicyInfo:
        return PolicyInfo("slow", ("cam_high",), 14, 10, 10, 1, ("transfer the cube",))

    def infer(self, observation: PolicyObservation, guidance: object = None) -> np.ndarray:
        self.calls += 1
        time.sleep(0.3)
        return np.zeros((10, 14))

    def close(self) -> None:
        pass


def test_a_policy_slower_than_the_rig_needs_is_refused_with_its_figure(
    twin_backend: RigBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowPolicy()
    monkeypatch.setattr("tui.backend.open_policy", lambda spec: slow)
    modes: set[str] = set()
    twin_backend.loop.subscribe(lambda step: modes.add(step.mode))
    until(twin_backend, lambda s: s.mode == "teleop")
    twin_backend.start_autonomy(checkpoint="slow")
    state = until(twin_backend, lambda s: any("refused: a chunk takes" in e for e in s.events), timeout=60)
    (line,) = [e for e in state.events if "refused" in e]
    assert "a chunk takes 0.3" in line and "the rig needs one within 0.10 s" in line
    assert slow.calls == 4 and "autonomous" not in modes  # warmed up and timed, never given the arms


def test_warm_up_times_chunks_after_the_first() -> None:
    timing = ChunkTiming(first_s=9.8, chunk_s=0.4, needed_s=0.5)
    assert timing.fast_enough and "the first 9.8 s" in timing.describe()
    assert needed_s(horizon=50, execute=25, rate_hz=50.0) == 0.5
