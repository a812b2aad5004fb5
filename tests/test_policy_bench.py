"""`rig bench policy` on the tiny size: every figure is there and sane, and the command runs."""

from __future__ import annotations

import math

import pytest

from policy.bench import PolicyBenchSettings, bench_policy
from rig.cli import main


def test_the_bench_reports_size_latency_and_throughput() -> None:
    settings = PolicyBenchSettings(
        "pi0-tiny", cameras=1, repeats=2, warmup=1, train_batch=2, train_steps=1, device="cpu", compile=False
    )
    report = bench_policy(settings)
    assert report.chunk is not None and len(report.train) == 2 and report.matmul is not None
    assert report.params.total == sum(count for _, count in report.params.parts)
    timings = (report.chunk.prefix, report.chunk.denoising, report.chunk.total)
    default, plain = report.train
    assert default.recipe.fused_optimizer and plain.recipe.precision == "fp32" and not plain.recipe.compile
    figures = [run_figure for run in report.train for run_figure in
               (run.samples_per_s, run.samples_per_cpu_s, run.step_s, run.gflop_per_cpu_s)]  # fmt: skip
    figures += [report.matmul.fp32_gflop_per_cpu_s, report.matmul.bf16_gflop_per_cpu_s]
    figures += [value for timing in timings for value in (timing.median_s, timing.p99_s)]
    figures += [count for _, count in report.params.parts]
    assert all(math.isfinite(value) and value > 0 for value in figures)
    text = str(report)
    assert "prefix" in text and "denoising" in text and "training speed-up" in text and "GFLOP" in text


def test_rig_bench_policy_runs_and_refuses_pi0_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "policy", "--config", "pi0-tiny", "--repeats", "2", "--train-batch", "2",
                 "--no-compile"]) == 0  # fmt: skip
    assert "denoising" in capsys.readouterr().out
    assert main(["bench", "policy", "--config", "pi0", "--device", "cpu"]) == 2
    assert "--allow-slow" in capsys.readouterr().err
    assert main(["bench", "policy", "--config", "pi0", "--params-only"]) == 0
    assert "3.24 B" in capsys.readouterr().out
