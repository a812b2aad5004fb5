"""The operator app (tui/app.py) through Textual's pilot: every screen at 80x24, the e-stop from
everywhere, and, on the real backend over the twin, recording an episode and toggling autonomy.

`RIG_TUI_SCREENSHOTS=docs pytest tests/test_tui_app.py` writes docs/tui-record.svg and docs/tui-run.svg.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from textual.pilot import Pilot

from tui.app import RigApp
from tui.backend import RigBackend
from tui.screens.help import HelpScreen
from tui.screens.record import RecordScreen
from tui.screens.run import RunScreen
from tui.state import AutonomyStatus, CameraStatus, CommandRefused, RecordingStatus, RigState
from tui.widgets.camera import CameraView, HalfBlocks, fit
from tui.widgets.fields import Field
from tui.widgets.status import StatusBar

SIZE = (80, 24)
SCREEN_KEYS = ("f1", "f2", "f3", "f4")


def synchronously(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async pilot test on a fresh event loop; no pytest async plugin needed."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def canned_state(*, estopped: bool = False, broken: bool = False) -> RigState:
    """A plausible snapshot; `broken`: an arm stopped answering and a camera stopped delivering."""
    names = tuple(
        f"{side}.{joint}"
        for side in ("left", "right")
        for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
    )
    preview = np.zeros((48, 64, 3), np.uint8)
    preview[:24, :, 0] = 255  # red above, blue below
    preview[24:, :, 2] = 255
    cameras = tuple(
        CameraStatus(
            name, 50.0, 0, ok=not (broken and i == 1), preview=None if broken and i == 1 else preview
        )
        for i, name in enumerate(("cam_high", "cam_left_wrist", "cam_right_wrist"))
    )
    return RigState(
        profile="aloha-sim",
        twin=True,
        mode="e-stop" if estopped else "teleop",
        estopped=estopped,
        rate_hz=50.0,
        period_error_p99_ms=0.4,
        overruns=0,
        bus_errors=("follower_left: no status packet",) if broken else (),
        joint_names=names,
        qpos=np.linspace(-1, 1, 14),
        leader=np.linspace(-1, 1, 14) + 0.1,
        lower=-np.full(14, 2.0),
        upper=np.full(14, 2.0),
        cameras=cameras,
        store_path="/tmp/store",
        store_bytes=123_456_789,
        free_bytes=50_000_000_000,
        episodes_in_store=3,
        recording=RecordingStatus(4, "transfer the cube", 2.5, 8.0),
        autonomy=AutonomyStatus("pi0-tiny step 1 (local)", "rtc", 7, 41.0, 3, 0, ("left",), lost=broken),
        twin_reward=2,
        events=("   12.00  recording episode 4",),
    )


class CannedBackend:
    """A `Backend` that records the commands it gets and answers with canned snapshots; for what the app
    draws and which key sends which command, not for what the rig does (the real backend tests below)."""

    def __init__(self, state: RigState | None = None, refuse: str | None = None) -> None:
        self.snapshot = state or canned_state()
        self.calls: list[str] = []
        self.refuse = refuse

    def state(self) -> RigState:
        return self.snapshot

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.refuse:
            raise CommandRefused(f"{name} refused")

    def start_episode(self, task: str) -> None:
        self._call("start_episode")

    def stop_episode(self, outcome: str | None = None) -> None:
        self._call("stop_episode")

    def rerecord(self) -> None:
        self._call("rerecord")

    def mark_last(self, outcome: str) -> None:
        self._call(f"mark_last {outcome}")

    def teleop(self) -> None:
        self._call("teleop")

    def estop(self) -> None:
        self._call("estop")

    def release_estop(self) -> None:
        self._call("release_estop")

    def start_autonomy(
        self, checkpoint: str | None = None, endpoint: str | None = None, task: str = ""
    ) -> None:
        self._call(f"start_autonomy {checkpoint or endpoint}")

    def stop_autonomy(self) -> None:
        self._call("stop_autonomy")

    def take_over(self) -> None:
        self._call("take_over")

    def hand_back(self) -> None:
        self._call("hand_back")

    def replay(self, episode_id: int) -> None:
        self._call("replay")

    def delete(self, episode_id: int) -> None:
        self._call("delete")

    def close(self) -> None:
        self._call("close")


async def until(pilot: Pilot[None], done: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until `done()`; the rig works on its own threads and its own clock."""
    for _ in range(int(timeout / 0.1)):
        if done():
            return
        await pilot.pause(0.1)
    state = pilot.app.last_state if isinstance(pilot.app, RigApp) else None
    seen = "" if state is None else f" (mode {state.mode}, {state.autonomy}, events {state.events[-4:]})"
    raise AssertionError(f"timed out waiting for {what or done}{seen}")


async def press(pilot: Pilot[None], *keys: str) -> None:
    """Keys for the tests on the twin: `pilot.press` waits for the process to idle, which it never
    does while the twin simulates and renders (a second per key), so post them as the terminal would."""
    for key in keys:
        pilot.app.simulate_key(key)
        await pilot.pause(0.1)


def shown(app: RigApp) -> str:
    """The screen's text as an SVG screenshot has it."""
    return app.export_screenshot().replace("&#160;", " ")


def screenshot(app: RigApp, name: str, tmp_path: Path) -> Path:
    """Save an SVG of the screen; into $RIG_TUI_SCREENSHOTS (docs/) when set, else a temporary folder."""
    folder = os.environ.get("RIG_TUI_SCREENSHOTS") or str(tmp_path)
    path = Path(app.save_screenshot(filename=name, path=folder))
    assert path.read_text(encoding="utf-8").startswith("<svg")
    return path


# ---- rendering and keys, on canned snapshots -------------------------------------------------


@synchronously
async def test_every_screen_renders_at_80x24_and_space_estops_from_each(tmp_path: Path) -> None:
    backend = CannedBackend()
    app = RigApp(backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        for count, key in enumerate(SCREEN_KEYS, 1):
            await pilot.press(key)
            await pilot.pause(0.3)
            bar = app.screen.query_one(StatusBar)
            assert bar.state is not None and bar.region.width == SIZE[0]
            assert "TELEOP" in str(bar.render())
            await pilot.press("space")
            assert backend.calls.count("estop") == count
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("space")
        assert backend.calls.count("estop") == len(SCREEN_KEYS) + 1
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)


@synchronously
async def test_record_screen_shows_arms_cameras_and_recording(tmp_path: Path) -> None:
    app = RigApp(CannedBackend(), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert isinstance(app.screen, RecordScreen)
        views = app.screen.query(CameraView)
        assert [view.name for view in views] == ["cam_high", "cam_left_wrist", "cam_right_wrist"]
        assert all(view.region.height >= 4 for view in views)
        text = shown(app)
        for part in ("● REC", "2.5 / 8.0 s", "shoulder", "cam_high 50 fps", "store 123.5 MB"):
            assert part in text, part


SNAPSHOTS = Path(__file__).parent / "snapshots"


def screen_text(app: RigApp) -> str:
    """The screen as lines of text (what a snapshot compares: layout and content, not colours)."""
    console = Console(width=SIZE[0], height=SIZE[1], record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(app.screen._compositor.render_update(full=True))  # the frame the terminal would get
    return console.export_text().rstrip() + "\n"


@pytest.mark.parametrize(("key", "name"), [("f1", "record"), ("f4", "run")])
@synchronously
async def test_the_main_screens_match_their_snapshots(tmp_path: Path, key: str, name: str) -> None:
    """Set RIG_UPDATE_SNAPSHOTS=1 to accept a deliberate change (then read the diff)."""
    app = RigApp(CannedBackend(), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await pilot.pause(0.5)
        text = screen_text(app)
    path = SNAPSHOTS / f"tui-{name}.txt"
    if os.environ.get("RIG_UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@synchronously
async def test_a_lost_device_shows_red_and_does_not_crash(tmp_path: Path) -> None:
    app = RigApp(CannedBackend(canned_state(broken=True)), tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        status = app.screen.query_one(StatusBar).render()
        assert "bus: follower_left: no status packet" in str(status)
        assert any(
            "red" in str(span.style) for span in status.spans if "bus" in str(status)[span.start : span.end]
        )
        lost = [view for view in app.screen.query(CameraView) if view.has_class("-lost")]
        assert [view.name for view in lost] == ["cam_left_wrist"]
        await pilot.press("f4")
        await pilot.pause(0.3)
        assert "LOST" in shown(app)


@synchronously
async def test_ctrl_e_estops_in_a_text_field_and_release_needs_two_presses(tmp_path: Path) -> None:
    backend = CannedBackend()
    app = RigApp(backend, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        app.screen.query_one("#task", Field).focus()
        await pilot.press("space", "ctrl+e")  # space types a space; ctrl+e stops the rig
        assert app.screen.query_one("#task", Field).value == " "
        assert backend.calls == ["estop"]
        await pilot.press("escape")  # leaves the field, does not stop an episode
        assert app.focused is None and backend.calls == ["estop"]
        await pilot.press("ctrl+r")
        assert "release_estop" not in backend.calls
        await pilot.press("ctrl+r")
        assert backend.calls[-1] == "release_estop"


@synchronously
async def test_record_and_run_keys_send_commands_and_refusals_are_notified(tmp_path: Path) -> None:
    backend = CannedBackend(refuse="rerecord")
    app = RigApp(backend, tmp_path, task="transfer the cube")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("right", "left", "escape", "s", "f")
        # the canned state is recording, so → ends this episode and starts the next
        assert backend.calls == [
            "stop_episode",
            "start_episode",
            "rerecord",
            "stop_episode",
            "mark_last success",
            "mark_last failure",
        ]
        assert any("rerecord refused" in n.message for n in app._notifications)
        backend.calls.clear()
        await pilot.press("f4", "a", "t")  # autonomy is running with the left arm taken over
        assert backend.calls == ["stop_autonomy", "hand_back"]


# ---- the real backend on the twin ------------------------------------------------------------


@pytest.fixture(scope="module")
def twin_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigBackend]:
    """One rig for the tests below (closing parks the arms, which takes seconds); each test starts by
    waiting for it to be free: teleop or idle, no e-stop, nothing recording, no policy."""
    backend = RigBackend(profile_name="aloha-sim", store_dir=tmp_path_factory.mktemp("tui") / "store")
    backend.start()
    try:
        yield backend
    finally:
        backend.estop()  # close() then skips parking the arms, seconds a test does not need
        backend.close()


def free(backend: RigBackend) -> bool:
    state = backend.state()
    return state.mode in ("teleop", "idle") and not state.estopped and state.recording is None


def test_half_blocks_put_two_pixels_in_a_cell() -> None:
    image = np.zeros((4, 2, 3), np.uint8)
    image[0] = (255, 0, 0)
    image[1] = (0, 0, 255)
    console = Console(width=10, force_terminal=True, color_system="truecolor", record=True)
    console.print(HalfBlocks(image))
    lines = console.export_text().splitlines()
    assert lines[:2] == ["▀▀", "▀▀"]
    first = next(iter(console.render(HalfBlocks(image))))
    assert first.style is not None and first.style.color is not None and first.style.bgcolor is not None
    assert first.style.color.get_truecolor() == (255, 0, 0)
    assert first.style.bgcolor.get_truecolor() == (0, 0, 255)
    assert fit(np.zeros((48, 64, 3), np.uint8), 32, 16).shape == (16, 21, 3)


@synchronously
async def test_right_arrow_records_an_episode_into_the_store(
    twin_backend: RigBackend, tmp_path: Path
) -> None:
    app = RigApp(twin_backend, twin_backend.store_dir, task="transfer the cube")
    before = twin_backend.state().episodes_in_store
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: free(twin_backend), what="the rig free")
        await press(pilot, "right")
        await until(pilot, lambda: twin_backend.state().recording is not None, what="recording")
        await until(
            pilot,
            lambda: all(c.ok and c.preview is not None for c in twin_backend.state().cameras),
            what="camera previews",
        )
        await pilot.pause(1.0)
        screenshot(app, "tui-record.svg", tmp_path)
        await press(pilot, "escape")
        await until(pilot, lambda: twin_backend.state().recording is None, what="the episode ended")
        await press(pilot, "s")
        await until(pilot, lambda: twin_backend.state().episodes_in_store == before + 1, what="the episode")
    from recorder.store import Store

    episode = Store(twin_backend.store_dir, create=False, lock=False).catalogue.episodes()[-1]
    assert episode.task == "transfer the cube" and episode.outcome == "success"


@synchronously
async def test_space_estops_the_real_rig(twin_backend: RigBackend, tmp_path: Path) -> None:
    app = RigApp(twin_backend, twin_backend.store_dir)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: free(twin_backend), what="the rig free")
        await press(pilot, "f4", "space")
        await until(pilot, lambda: twin_backend.state().estopped, what="e-stop")
        await until(pilot, lambda: "E-STOP" in str(app.screen.query_one(StatusBar).render()), what="shown")
        assert app.screen.has_class("-estopped")
        await press(pilot, "ctrl+r", "ctrl+r")
        await until(pilot, lambda: not twin_backend.state().estopped, what="release")


@synchronously
async def test_a_toggles_autonomy_on_and_off(
    twin_backend: RigBackend, checkpoint: Path, tmp_path: Path
) -> None:
    app = RigApp(twin_backend, twin_backend.store_dir, task="transfer the cube")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: free(twin_backend), what="the rig free")
        await press(pilot, "f4")
        app.screen.query_one("#target", Field).value = str(checkpoint)
        await press(pilot, "a")

        def engaged() -> bool:  # an untrained pi0-tiny may be rejected by the safety layer right away
            state = twin_backend.state()
            return state.mode == "autonomous" or (state.autonomy is not None and state.autonomy.lost)

        await until(pilot, engaged, timeout=40, what="autonomous")
        assert any("autonomy: pi0-tiny step 1 (local)" in event for event in twin_backend.state().events)
        await pilot.pause(0.5)
        assert "pi0-tiny step 1" in shown(app)
        screenshot(app, "tui-run.svg", tmp_path)
        await press(pilot, "a")
        await until(pilot, lambda: twin_backend.state().mode == "teleop", what="back to teleop")
        assert twin_backend.state().autonomy is None


def test_rig_without_arguments_opens_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tui.app
    from rig import cli

    opened: list[tuple[str, Path, str]] = []
    monkeypatch.setattr(tui.app, "run_app", lambda *args: opened.append(args) or 0)
    assert cli.main([]) == 0
    assert opened == [(cli.DEFAULT_PROFILE, cli.default_store_dir(), "")]
    assert cli.main(["tui", "--profile", "aloha", "--store", str(tmp_path), "--task", "fold"]) == 0
    assert opened[-1] == ("aloha", tmp_path, "fold")
