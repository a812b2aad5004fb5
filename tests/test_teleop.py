"""Teleoperation end to end on the twin: the scripted operator moves the leaders, the real loop
moves the followers, and the twin's reward judges the followers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hardware.profile import load_profile
from rig.bench import teleop_episode


def run_rig(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "rig.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def test_one_transfer_cube_episode_succeeds_through_the_loop() -> None:
    result = teleop_episode(load_profile("aloha-sim"), seed=0)
    assert result.success, result


@pytest.mark.slow
def test_transfer_cube_succeeds_in_at_least_19_of_20_seeded_episodes() -> None:
    results = [teleop_episode(load_profile("aloha-sim"), seed) for seed in range(20)]
    failed = [r for r in results if not r.success]
    assert len(failed) <= 1, failed


def test_rig_teleop_runs_headless_with_a_status_line() -> None:
    result = run_rig("teleop", "--seconds", "3", "--no-cameras")
    lines = [line for line in result.stdout.splitlines() if line.startswith("t ")]
    assert lines and "Hz" in lines[-1] and "overruns" in lines[-1] and "e-stop off" in lines[-1]
    assert "scripted operator: reward" in result.stdout


def test_rig_bench_loop_prints_its_figures() -> None:
    result = run_rig("bench", "loop", "--steps", "100")
    assert "wall clock" in result.stdout and "simulated clock" in result.stdout
    assert result.stdout.count("period error") == 2 and "overruns" in result.stdout


@pytest.mark.slow
def test_insertion_succeeds_in_at_least_19_of_20_seeded_episodes() -> None:
    results = [teleop_episode(load_profile("aloha-sim"), seed, "insertion") for seed in range(20)]
    failed = [r for r in results if not r.success]
    assert len(failed) <= 1, failed
