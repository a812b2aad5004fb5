"""The run folder's evaluation log and success curve: what `rig eval` leaves for later comparison."""

from __future__ import annotations

from pathlib import Path

from policy.progress import EvalResult, append_eval, plot_success, read_eval_log, wilson_interval


def result(step: int, successes: int, episodes: int = 10, task: str = "transfer_cube") -> EvalResult:
    low, high = wilson_interval(successes, episodes)
    return EvalResult(step, task, episodes, successes, low, high, seed=0, strategy="rtc", wall_s=1.0)


def test_eval_log_round_trips_and_the_curve_pools_evaluations_of_one_step(tmp_path: Path) -> None:
    results = [result(500, 2), result(500, 4), result(1000, 9), result(1000, 1, task="insertion")]
    for r in results:
        append_eval(tmp_path, r)
    assert read_eval_log(tmp_path / "eval.csv") == results
    plot = plot_success(tmp_path)
    assert plot == tmp_path / "success.png" and plot.stat().st_size > 1000


def test_wilson_interval_is_sane_at_the_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.05 < high < 0.1  # 0/50 still leaves up to ~7 %
    low, high = wilson_interval(45, 50)
    assert 0.78 < low < 0.9 < high < 0.96
    assert plot_success(Path("/nonexistent")) is None
