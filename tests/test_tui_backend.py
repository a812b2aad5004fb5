"""The TUI's backend on the twin: a real loop, recorder and store, commands as the app sends them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from hardware.profile import load_profile
from recorder.catalogue import Catalogue
from rig.step import Step
from tui.backend import RigBackend
from tui.state import CommandRefused, RigState


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[RigBackend]:
    """One small camera rendered at 10 fps: the twin then runs about twice as fast as real time."""
    profile = load_profile("aloha-sim")
    camera = dataclasses.replace(profile.cameras["cam_high"], width=64, height=48, fps=10)
    profile = dataclasses.replace(profile, cameras={"cam_high": camera})
    with RigBackend(store_dir=tmp_path / "store", profile=profile) as started:
        yield started


def until(backend: RigBackend, check: Callable[[RigState], bool], timeout: float = 30.0) -> RigState:
    """Poll state() as the app does until `check` holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = backend.state()
        if check(state):
            return state
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s; last state: mode {state.mode}, events {state.events[-5:]}")


def rig_seconds(backend: RigBackend, seconds: float) -> Step:
    """Let `seconds` pass on the rig clock."""
    step = backend.loop.wait_for_step()
    end = step.t + seconds
    while step.t < end:
        step = backend.loop.wait_for_step(step.index)
    return step


def test_start_engages_teleop_and_reports_joints_cameras_and_store(backend: RigBackend) -> None:
    state = until(
        backend, lambda s: s.mode == "teleop" and s.rate_hz > 0 and s.cameras[0].fps > 0 and s.cameras[0].ok
    )
    assert state.twin and state.profile == "aloha-sim" and not state.estopped
    assert len(state.joint_names) == 14 and state.joint_names[0] == "left.waist"
    assert state.qpos is not None and state.qpos.shape == (14,)
    assert state.leader is not None and state.lower.shape == state.upper.shape == (14,)
    assert 40 < state.rate_hz < 60
    camera = state.cameras[0]
    assert camera.name == "cam_high" and camera.preview is not None
    assert camera.preview.shape == (48, 64, 3) and camera.preview.dtype == np.uint8
    assert state.store_bytes > 0 and state.free_bytes > 0 and state.episodes_in_store == 0
    assert state.recording is None and state.autonomy is None and state.twin_reward is not None


def test_an_episode_on_the_twin_ends_with_the_demonstration_and_is_judged_by_the_twin(
    backend: RigBackend,
) -> None:
    until(backend, lambda s: s.mode == "teleop")
    backend.start_episode("transfer the cube")
    recording = backend.state().recording
    assert recording is not None and recording.planned_s is not None and recording.planned_s > 5
    with pytest.raises(CommandRefused, match="being recorded"):
        backend.start_episode("again")
    with pytest.raises(CommandRefused, match="being recorded"):
        backend.delete(recording.episode_id)
    with pytest.raises(CommandRefused, match="being recorded"):
        backend.start_autonomy(checkpoint="anything")
    state = until(backend, lambda s: s.recording is None, timeout=40)
    assert state.episodes_in_store == 1

    with closing(Catalogue(backend.store_dir / "catalogue.db")) as catalogue:
        episode = catalogue.episode(recording.episode_id)
    assert episode.status == "complete" and (episode.steps or 0) > 100
    assert episode.twin_reward is not None
    assert episode.outcome == ("success" if episode.twin_reward == 4 else "failure")
    backend.mark_last("success")
    with closing(Catalogue(backend.store_dir / "catalogue.db")) as catalogue:
        assert catalogue.episode(recording.episode_id).outcome == "success"


def test_stop_rerecord_replay_and_delete(backend: RigBackend) -> None:
    until(backend, lambda s: s.mode == "teleop")
    backend.start_episode("short")
    rig_seconds(backend, 0.5)
    backend.rerecord()
    assert backend.state().recording is None and backend.state().episodes_in_store == 0
    backend.start_episode("short")
    rig_seconds(backend, 0.6)
    backend.stop_episode("failure")
    state = backend.state()
    assert state.recording is None and state.episodes_in_store == 1
    with closing(Catalogue(backend.store_dir / "catalogue.db")) as catalogue:
        (episode,) = catalogue.episodes()
    assert episode.outcome == "failure" and (episode.steps or 0) >= 25

    modes: set[str] = set()
    backend.loop.subscribe(lambda step: modes.add(step.mode))
    backend.replay(episode.id)
    with pytest.raises(CommandRefused, match="replay is running"):
        backend.start_episode("during the replay")
    until(backend, lambda s: s.mode == "idle")
    assert {"move", "replay"} <= modes
    backend.delete(episode.id)
    assert backend.state().episodes_in_store == 0


def test_estop_holds_the_followers_and_release_returns_to_idle(backend: RigBackend) -> None:
    until(backend, lambda s: s.mode == "teleop")
    backend.start_episode("moving leaders")  # the scripted operator moves the leaders from here on
    rig_seconds(backend, 3.0)
    backend.estop()
    assert backend.state().estopped
    rig_seconds(backend, 0.3)
    held = backend.state()
    assert held.mode == "e-stop" and held.qpos is not None and held.leader is not None
    rig_seconds(backend, 1.0)
    later = backend.state()
    assert later.qpos is not None and later.leader is not None
    assert np.abs(later.leader - held.leader).max() > 0.01  # the leaders went on
    joints = np.ones(14, dtype=bool)
    joints[[6, 13]] = False  # the grippers squeeze on at their current limit
    assert np.abs(later.qpos - held.qpos)[joints].max() < 0.01  # the followers did not
    with pytest.raises(CommandRefused, match="e-stop"):
        backend.teleop()
    backend.rerecord()
    with pytest.raises(CommandRefused, match="e-stop"):
        backend.start_episode("while stopped")
    backend.release_estop()
    state = until(backend, lambda s: s.mode == "idle")
    assert not state.estopped
    backend.teleop()
    until(backend, lambda s: s.mode == "teleop")


def test_a_servo_that_stops_answering_is_reported_not_fatal(backend: RigBackend) -> None:
    until(backend, lambda s: s.mode == "teleop")
    twin = backend.devices.twin
    assert twin is not None
    twin.chains["follower_left"].drop(4)
    # the fault shows in a step a tick or two before the loop's switch to idle does
    state = until(backend, lambda s: bool(s.bus_errors) and s.mode == "idle")
    assert "follower_left" in state.bus_errors[0] and state.mode == "idle"
    twin.chains["follower_left"].drop(4, dropped=False)
    until(backend, lambda s: not s.bus_errors)


def test_autonomy_engages_the_policy_and_stops_back_to_teleop(backend: RigBackend, checkpoint: Path) -> None:
    until(backend, lambda s: s.mode == "teleop")
    modes: set[str] = set()
    backend.loop.subscribe(lambda step: modes.add(step.mode))
    backend.start_autonomy(checkpoint=str(checkpoint), task="transfer the cube")
    with pytest.raises(CommandRefused, match="policy is driving"):
        backend.start_episode("during autonomy")
    state = until(
        backend, lambda s: s.autonomy is not None and (s.autonomy.chunks > 0 or s.autonomy.lost), timeout=60
    )
    assert state.autonomy is not None and state.autonomy.policy.startswith("pi0-tiny")
    assert "autonomous" in modes
    backend.stop_autonomy()
    state = until(backend, lambda s: s.mode == "teleop")
    assert state.autonomy is None
    with pytest.raises(CommandRefused, match="not running"):
        backend.stop_autonomy()


def test_commands_that_cannot_be_done_now_are_refused(backend: RigBackend, tmp_path: Path) -> None:
    refused: list[Callable[[], None]] = [
        backend.stop_episode,
        backend.rerecord,
        lambda: backend.mark_last("success"),
        backend.take_over,
        backend.hand_back,
        backend.release_estop,
        backend.stop_autonomy,
        lambda: backend.start_autonomy(),
        lambda: backend.delete(99),
        lambda: backend.replay(99),
    ]
    for command in refused:
        with pytest.raises(CommandRefused):
            command()
    with pytest.raises(CommandRefused, match="not started"):
        RigBackend(store_dir=tmp_path / "other").state()
