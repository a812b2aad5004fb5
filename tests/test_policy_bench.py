"""`rig bench policy` on the tiny size: every figure is there and sane, and the command runs."""

from __future__ import annotations

import math

import pytest

from policy.bench import PolicyBenchSettings, bench_policy
from rig.cli import main


def test_the_bench_reports_size_latency_and_throughput() -> None:
    settings = PolicyBenchSettings(
        "pi0-tiny", cameras=1, repeats=2, warmup=1, train_batch=2, train_steps=1, device="cpu"
    )
    report = bench_policy(settings)
    assert report.chunk is not None and report.train is not None
    assert report.params.total == sum(count for _, count in report.params.parts)
    timings = (report.chunk.prefix, report.chunk.denoising, report.chunk.total)
    figures = [report.train.samples_per_s, report.train.step_s]
    figures += [value for timing in timings for value in (timing.median_s, timing.p99_s)]
    figures += [count for _, count in report.params.parts]
    assert all(math.isfinite(value) and value > 0 for value in figures)
    text = str(report)
    assert "prefix" in text and "denoising" in text and "samples/s" in text


def test_rig_bench_policy_runs_and_refuses_pi0_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "policy", "--config", "pi0-tiny", "--repeats", "2", "--train-batch", "2"]) == 0
    assert "denoising" in capsys.readouterr().out
    assert main(["bench", "policy", "--config", "pi0", "--device", "cpu"]) == 2
    assert "--allow-slow" in capsys.readouterr().err
    assert main(["bench", "policy", "--config", "pi0", "--params-only"]) == 0
    assert "3.24 B" in capsys.readouterr().out
