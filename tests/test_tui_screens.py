"""The episodes and training screens on a bare app, with a real store and a real `rig train`."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import write_synthetic_store
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input

from recorder.catalogue import Catalogue
from tui.screens import EpisodesScreen, TrainScreen
from tui.state import CommandRefused
from tui.widgets.plot import LinePlot, Series, render_plot

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = write_synthetic_store(tmp_path / "store", episodes=2, steps=40, task="transfer the cube")
    write_synthetic_store(root, episodes=1, steps=30, cameras=("cam_high",), task="open the drawer")
    with closing(Catalogue(root / "catalogue.db")) as catalogue:
        catalogue.set_outcome(2, "failure")
        catalogue.set_outcome(3, None)
    return root


class RecordingBackend:
    """Just the episode commands, recording what the screen asked; refuses replay when told to."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse = refuse

    def replay(self, episode_id: int) -> None:
        if self.refuse:
            raise CommandRefused("the rig is recording")
        self.calls.append(("replay", episode_id))

    def delete(self, episode_id: int) -> None:
        self.calls.append(("delete", episode_id))


def host(screen: Screen[None]) -> App[None]:
    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    return Host()


def shown_ids(screen: EpisodesScreen) -> list[int]:
    table = screen.query_one(DataTable)
    return [int(str(table.get_row_at(i)[0])) for i in range(table.row_count)]


async def wait_for(pilot: Pilot[None], condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.2)


def test_the_plot_draws_braille_curves_with_a_legend_and_range() -> None:
    t = np.linspace(0, 1, 20)
    text = render_plot([Series("q", t, t), Series("a", t, 1 - t, "red")], 30, 6, "joint").plain
    lines = text.split("\n")
    assert len(lines) == 6 and "joint" in lines[0] and "q" in lines[0] and "a" in lines[0]
    assert lines[1].strip().startswith("1") and lines[-1].strip().startswith("0")
    assert all(len(line) == 30 for line in lines[1:])
    assert any(ch not in " ⠀" for line in lines[1:] for ch in line[8:])
    assert "(no data)" in render_plot([], 30, 6).plain


async def test_episodes_lists_sorts_filters_and_plots(store: Path) -> None:
    screen = EpisodesScreen(store, None)
    async with host(screen).run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert shown_ids(screen) == [1, 2, 3]
        table = screen.query_one(DataTable)
        assert table.get_row_at(0)[1:6] == ["success", "transfer the cube", "40", "0.8", "complete"]
        assert screen.selected == 1
        plot = screen.query_one("#joint-1", LinePlot)
        assert plot.points == 80 and "qpos" in plot.render().plain  # type: ignore[union-attr]
        summary = str(screen.query_one("#summary").render())
        assert "cam_high" in summary and "40 steps" in summary

        await pilot.press("S")  # reverse the id order
        assert shown_ids(screen) == [3, 2, 1]
        await pilot.press("s")  # next column: outcome (before the task, so that 80 columns show it)
        assert screen.sort_column == "outcome"
        await pilot.press("s")  # then task, descending
        assert screen.sort_column == "task" and shown_ids(screen) == [1, 2, 3]
        await pilot.click(DataTable, offset=(1, 0))  # the id header
        assert screen.sort_column == "id" and shown_ids(screen) == [1, 2, 3]

        await pilot.press("slash", *"drawer")
        assert shown_ids(screen) == [3] and screen.selected == 3
        assert screen.query_one("#joint-1", LinePlot).points == 60
        screen.query_one("#filter", Input).value = "FAIL"
        await pilot.pause()
        assert shown_ids(screen) == [2]


async def test_episodes_replay_and_delete_go_through_the_backend(store: Path) -> None:
    backend = RecordingBackend()
    screen = EpisodesScreen(store, backend)
    async with host(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down", "p")
        assert backend.calls == [("replay", 2)]
        await pilot.press("d")
        assert backend.calls == [("replay", 2)]  # asked, not yet deleted
        await pilot.press("down", "d")  # another episode: asks again
        await pilot.press("d")
        assert backend.calls[-1] == ("delete", 3)
        backend.refuse = True
        await pilot.press("p")
        await pilot.pause()
        assert any("recording" in n.message for n in pilot.app._notifications)


async def test_episodes_without_a_backend_delete_from_the_store(store: Path) -> None:
    screen = EpisodesScreen(store, None)
    async with host(screen).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("down", "d", "d")
        await pilot.pause()
        assert shown_ids(screen) == [1, 3] and screen.selected in (1, 3)
        assert not (store / "episodes" / "000002").exists()
        await pilot.press("p")  # no rig: a warning, nothing else
    with closing(Catalogue(store / "catalogue.db")) as catalogue:
        assert [e.id for e in catalogue.episodes()] == [1, 3]


async def test_training_starts_stops_with_a_checkpoint_and_resumes(tmp_path: Path) -> None:
    store = write_synthetic_store(tmp_path / "store", episodes=2, steps=40)
    screen = TrainScreen(store, extra_args=("--workers", "0", "--log-every", "1", "--save-every", "1000"))
    async with host(screen).run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen.query_one("#config").value = "pi0-tiny"  # type: ignore[attr-defined]
        screen.query_one("#steps", Input).value = "100000"
        screen.query_one("#batch", Input).value = "4"
        await pilot.press("s")
        assert screen.job is not None
        job = screen.job
        await wait_for(pilot, lambda: job.status().step >= 2, 60)
        await pilot.pause(0.6)
        assert screen.query_one("#loss", LinePlot).points >= 2

        await pilot.press("x")
        await wait_for(pilot, lambda: not job.status().running, 60)
        stopped = job.status()
        assert stopped.state == "stopped" and stopped.returncode == 0 and stopped.checkpoint is not None
        assert int(stopped.checkpoint.name) == stopped.step
        assert any("stopped at step" in line for line in stopped.lines)

        screen.query_one("#steps", Input).value = str(stopped.step + 2)
        await pilot.press("r")
        await wait_for(pilot, lambda: job.status().state == "finished", 60)
        done = job.status()
        assert done.step == done.total == stopped.step + 2
        assert done.checkpoint is not None and done.checkpoint.name == f"{done.total:08d}"
        await pilot.pause(0.6)
        assert "finished" in str(screen.query_one("#figures").render())
