"""Autonomous mode on the twin: the policy drives through the real loop and drivers, the operator
takes over by moving a leader (recorded as a labeled segment), and a dead policy server means hold."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_loop import LEADER_POSE, collect, events, make_loop

from hardware.devices import Devices, open_devices
from hardware.profile import load_profile
from policy.client import PolicyClient
from policy.infer import LocalPolicy
from policy.interface import Guidance, PolicyInfo, PolicyObservation
from policy.progress import read_eval_log
from policy.scheduler import ActionScheduler, SchedulerConfig
from policy.server import PolicyServer
from recorder.catalogue import Catalogue
from recorder.recorder import EpisodeRecorder
from recorder.steps import read_steps
from recorder.store import Store
from rig.loop import ControlLoop
from rig.modes import Autonomous, InterventionConfig, Observation, Teleop
from rig.step import MODES


@pytest.fixture
def devices() -> Iterator[Devices]:
    profile = dataclasses.replace(load_profile("aloha-sim"), cameras={})
    with open_devices(profile) as opened:
        yield opened


@pytest.fixture
def loop(devices: Devices) -> Iterator[ControlLoop]:
    started = make_loop(devices).start()
    yield started
    started.stop(park=False)


class Sway:
    """A stand-in policy's action source: a slow sine around where the followers started."""

    def __init__(self) -> None:
        self.origin: np.ndarray | None = None

    def next_action(self, obs: Observation) -> np.ndarray:
        if self.origin is None:
            self.origin = obs.command.copy()
        return self.origin + 0.05 * np.sin(obs.index / 25)

    def take_events(self) -> list[str]:
        return []


def test_moving_a_leader_takes_that_arm_over_and_the_episode_labels_it(
    devices: Devices, loop: ControlLoop, tmp_path: Path
) -> None:
    assert devices.twin is not None
    store = Store(tmp_path / "store")
    session = store.catalogue.start_session(profile="x", profile_snapshot="", calibration={}, rig_version="t")
    recorder = EpisodeRecorder(store, session, [], devices.profile.rate_hz)
    loop.subscribe(recorder.on_step)
    mode = Autonomous(Sway(), InterventionConfig(threshold_rad=0.15, ramp_s=0.4))
    loop.set_mode(mode, ramp_s=0.2)
    collect(loop, 20)
    episode = recorder.begin("sway", tags=("autonomous",))
    before = collect(loop, 30)
    devices.twin.set_leader_pose("leader_left", LEADER_POSE)  # a hand on the left leader
    during = collect(loop, 60)
    mode.hand_back()
    after = collect(loop, 40)
    summary = recorder.end()

    assert {s.mode for s in before} == {"autonomous"}
    assert during[-1].mode == "intervention" and after[-1].mode == "autonomous"
    assert events(during, "intervention: operator took the left arm")
    assert events(after, "intervention: left arm handed back")
    assert during[-1].action[:6] == pytest.approx(LEADER_POSE[:6], abs=0.02)  # the left follows its leader
    right = np.array([s.action[7:13] for s in during])
    proposal = np.array([s.policy_action[7:13] for s in during])  # type: ignore[index]
    assert np.allclose(right, proposal, atol=1e-6)  # the right arm's joints stay with the policy
    assert all(s.policy_action is not None for s in during)  # the policy's actions are kept meanwhile
    actions = np.array([s.action for s in before + during + after])
    assert np.all(np.abs(np.diff(actions, axis=0)) <= loop.safety._max_step + 1e-9)  # blends, no jumps

    labels = [(s.label, s.end_step - s.start_step) for s in store.catalogue.segments(episode)]
    assert [label for label, _ in labels] == ["autonomous", "intervention", "autonomous"]
    steps = read_steps(store.episode_dir(episode))
    assert MODES[int(steps["mode"][-1])] == "autonomous"
    assert np.isfinite(steps["policy_action"]).all()
    assert len(summary.interventions) == 1


@dataclasses.dataclass
class WithCamera:
    """The client, with a still frame for the policy's camera: this loop renders none (for speed),
    and a policy server refuses to act blind."""

    client: PolicyClient

    def info(self) -> PolicyInfo:
        return self.client.info()

    def infer(self, observation: PolicyObservation, guidance: Guidance | None = None) -> np.ndarray:
        images = {name: np.full((48, 64, 3), 90, np.uint8) for name in self.info().cameras}
        return self.client.infer(dataclasses.replace(observation, images=images), guidance)


def test_a_killed_policy_server_means_hold_not_motion(
    devices: Devices, loop: ControlLoop, checkpoint: Path
) -> None:
    server = PolicyServer(LocalPolicy.from_checkpoint(checkpoint, "cpu", seed=0), bind="tcp://127.0.0.1:*")
    stop = threading.Event()
    serving = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    serving.start()
    client = PolicyClient(server.endpoint, timeout_s=3.0)  # a loaded CI machine answers slowly
    scheduler = ActionScheduler(
        WithCamera(client), "transfer the cube", SchedulerConfig(execute=5, reply_timeout_ticks=100)
    )
    mode = Autonomous(scheduler)
    loop.set_mode(Teleop(), ramp_s=0.0)
    collect(loop, 10)
    loop.set_mode(mode, ramp_s=0.2)
    deadline = time.monotonic() + 30
    while scheduler.stats.chunks < 2 and time.monotonic() < deadline:
        collect(loop, 5)
    assert scheduler.stats.chunks >= 2
    stop.set()
    serving.join(timeout=5)
    server.close()
    steps: list = []
    while loop.mode is mode and len(steps) < 2000:  # the chunk runs out, the rig holds, the reply is given up
        steps += collect(loop, 50)
    steps += collect(loop, 40)
    assert events(steps, "watchdog") or any("policy is lost" in e for s in steps for e in s.events)
    assert loop.mode is not mode  # autonomy was left
    tail = np.array([s.action for s in steps[-30:]])
    assert np.ptp(tail, axis=0).max() < 1e-9  # holding still
    scheduler.close()
    client.close()


RIG = [sys.executable, "-m", "rig.cli"]


def test_rig_eval_runs_seeded_episodes_and_keeps_them_tagged(checkpoint: Path, tmp_path: Path) -> None:
    store, run = tmp_path / "store", tmp_path / "run"
    shutil.copytree(checkpoint.parent.parent, run)  # the eval is logged into the run folder
    result = subprocess.run(
        [*RIG, "eval", "--checkpoint", str(run), "--episodes", "1", "--episode-time", "1",
         "--store", str(store)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "episode 1/1 (seed 0)" in result.stdout and "95 % CI" in result.stdout
    catalogue = Catalogue(store / "catalogue.db")
    (episode,) = catalogue.episodes()
    assert episode.tags == ("eval",) and episode.outcome in ("success", "failure")
    # An untrained policy may plan nonsense that is rejected (the episode then ends early, held).
    assert episode.steps >= 1 and (store / "episodes" / f"{episode.id:06d}" / "cam_high.mp4").exists()
    (logged,) = read_eval_log(run / "eval.csv")
    assert (logged.step, logged.task, logged.episodes) == (1, "transfer_cube", 1)
    assert logged.successes == (episode.outcome == "success") and (run / "success.png").stat().st_size > 1000


def test_rig_run_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*RIG, "run", "--checkpoint", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "neither a checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_rig_run_drives_blends_back_and_records_the_run(checkpoint: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = subprocess.run(
        [*RIG, "run", "--checkpoint", str(checkpoint), "--seconds", "1", "--record", "--store", str(store)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "policy pi0-tiny" in result.stdout and "task: transfer the cube" in result.stdout
    (episode,) = Catalogue(store / "catalogue.db").episodes()
    assert episode.tags == ("autonomous",) and episode.steps > 50
