"""`rig train` end to end on a real store: checkpoints, logs, interruption and resume, DDP, bad files."""

from __future__ import annotations

import csv
import itertools
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open
from synthetic_store import write_synthetic_store
from test_policy_model import inputs_for

from policy.batch import TrainingBatch
from policy.checkpoint import META_FILE, MODEL_FILE, TRAIN_STATE_FILE, CheckpointError, load_policy
from policy.config import get_config
from policy.distributed import (
    DeviceError,
    Ranks,
    backend_for,
    build_model,
    full_state,
    resolve_device,
    restore_optimizer,
    wrap_model,
)
from policy.pi0 import Pi0
from policy.train import Ema, Schedule, TrainingError, TrainSettings, make_optimizer, train, train_step
from policy.weights import save_pi0_weights
from recorder.catalogue import Catalogue

RIG = [sys.executable, "-m", "rig.cli"]
TINY = ["--config", "pi0-tiny", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("store"), episodes=2, steps=40)


def rig_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RIG, "train", *args], capture_output=True, text=True, timeout=300)


def loss_rows(run: Path) -> list[dict[str, str]]:
    with (run / "loss.csv").open() as file:
        return list(csv.DictReader(file))


def test_the_schedule_warms_up_then_decays_to_the_final_rate() -> None:
    schedule = Schedule(peak=1e-3, warmup=10, total=110, final=1e-4)
    rates = [schedule.lr(step) for step in range(111)]
    assert rates[0] == pytest.approx(1e-3 / 11) and rates[9] == pytest.approx(1e-3 * 10 / 11)
    assert rates[10] == pytest.approx(1e-3) and rates[110] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_rig_train_writes_checkpoints_a_loss_log_and_a_plot(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = rig_train("--store", str(store), *TINY, "--steps", "8", "--save-every", "4", "--log-every", "2",
                       "--out", str(run), "--ema", "0.9")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "done: step 8" in result.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000004", "00000008"]
    assert [int(row["step"]) for row in loss_rows(run)] == [2, 4, 6, 8]
    assert (run / "loss.png").stat().st_size > 1000
    model, meta = load_policy(run)
    assert meta.step == 8 and meta.config.name == "pi0-tiny" and meta.data.cameras[0] == "cam_high"
    actions = model.sample_actions(inputs_for("pi0-tiny"))
    assert actions.shape == (2, 10, 32) and torch.isfinite(actions).all()
    with safe_open(str(run / "checkpoints/00000008" / TRAIN_STATE_FILE), framework="pt") as file:
        names = list(file.keys())
    assert any(n.startswith("weights.") for n in names)  # with an EMA, the raw weights are kept to resume
    catalogue = Catalogue(store / "catalogue.db")
    last = catalogue.training_runs()[-1]
    assert last.status == "complete" and last.checkpoint == str(run / "checkpoints/00000008")


def test_an_interrupted_run_saves_and_resumes_where_it_stopped(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = subprocess.Popen(
        [*RIG, "train", "--store", str(store), *TINY, "--steps", "100000", "--log-every", "1",
         "--out", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((run / "loss.csv").exists() and len(loss_rows(run)) >= 3):
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    checkpoints = list((run / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    stopped = int(checkpoints[0].name)
    assert stopped >= 3 and f"stopped at step {stopped}" in out and "--resume" in out
    assert Catalogue(store / "catalogue.db").training_runs()[-1].status == "interrupted"

    result = rig_train("--store", str(store), *TINY, "--steps", str(stopped + 3), "--log-every", "1",
                       "--resume", "--out", str(run))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"resuming {run} from step {stopped}" in result.stdout
    assert [int(r["step"]) for r in loss_rows(run)][-4:] == [stopped, stopped + 1, stopped + 2, stopped + 3]
    final = run / "checkpoints" / f"{stopped + 3:08d}"
    with safe_open(str(final / TRAIN_STATE_FILE), framework="pt") as file:
        step_count = file.get_tensor("optimizer.action_out_proj.weight.step")
    assert int(step_count) == stopped + 3  # Adam's moments were restored, not restarted


def test_resume_with_nothing_to_resume_says_so(store: Path, tmp_path: Path) -> None:
    result = rig_train("--store", str(store), *TINY, "--resume", "--out", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "nothing to resume" in result.stderr and "Traceback" not in result.stderr


def test_init_from_lerobot_weights_and_a_frozen_prefix(store: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    published = Pi0(get_config("pi0-tiny"))
    save_pi0_weights(published, tmp_path / "published.safetensors", layout="lerobot")
    settings = TrainSettings(store=store, config="pi0-tiny", steps=3, batch_size=4, workers=0,
                             out=tmp_path / "run", init=tmp_path / "published.safetensors",
                             freeze_prefix=True)  # fmt: skip
    result = train(settings, say=lambda _: None)
    trained, _ = load_policy(result.checkpoint)
    before, after = published.state_dict(), trained.state_dict()
    assert all(
        torch.equal(before[name], after[name]) for name in before if name.startswith(("vision.", "language."))
    )
    assert not torch.equal(before["action_out_proj.weight"], after["action_out_proj.weight"])


def test_a_non_finite_gradient_skips_the_update() -> None:
    model = Pi0(get_config("pi0-tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    actions = torch.randn(2, 10, 32)
    actions[0, 0, 0] = float("nan")
    batch = TrainingBatch(inputs_for("pi0-tiny"), actions, torch.zeros(2, 10, dtype=torch.bool),
                          torch.arange(32) < 14)  # fmt: skip
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    _, grad_norm = train_step(model, optimizer, batch, torch.randn(2, 10, 32), torch.rand(2), 1.0)
    assert not torch.isfinite(grad_norm)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_a_fused_optimizer_skips_a_non_finite_update_without_waiting_for_it() -> None:
    model = Pi0(get_config("pi0-tiny"))
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0, fused=True)
    actions = torch.randn(2, 10, 32)
    finite = TrainingBatch(inputs_for("pi0-tiny"), actions, torch.zeros(2, 10, dtype=torch.bool),
                           torch.arange(32) < 14)  # fmt: skip
    train_step(model, optimizer, finite, torch.randn(2, 10, 32), torch.rand(2), 1.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    actions = actions.clone()
    actions[0, 0, 0] = float("nan")
    broken = TrainingBatch(finite.inputs, actions, finite.action_is_pad, finite.action_dim_mask)
    _, grad_norm = train_step(model, optimizer, broken, torch.randn(2, 10, 32), torch.rand(2), 1.0)
    assert not torch.isfinite(grad_norm) and not hasattr(optimizer, "found_inf")
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert {int(state["step"]) for state in optimizer.state.values()} == {1}  # the skipped step not counted


def test_a_corrupt_checkpoint_is_refused_with_advice(store: Path, tmp_path: Path) -> None:
    result = train(TrainSettings(store=store, config="pi0-tiny", steps=1, batch_size=4, workers=0,
                                 out=tmp_path / "run"), say=lambda _: None)  # fmt: skip
    weights = result.checkpoint / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="re-download or re-convert"):
        load_policy(result.checkpoint)
    (result.checkpoint / META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="earlier checkpoint"):
        load_policy(result.checkpoint)
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        load_policy(tmp_path)


# -- DDP and FSDP: two CPU processes (gloo) take the same step as one process on the whole batch
# The step is plain SGD: Adam's first update is about lr·sign(g), which turns float noise in tiny
# gradients into full-size differences and would compare nothing useful.
def _fixed_batch() -> tuple[TrainingBatch, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    actions = torch.randn(4, 10, 32, generator=generator)
    pad = torch.zeros(4, 10, dtype=torch.bool)
    pad[1, 7:] = True
    batch = TrainingBatch(inputs_for("pi0-tiny", batch=4, seed=5), actions, pad, torch.arange(32) < 14)
    return batch, torch.randn(4, 10, 32, generator=generator), torch.rand(4, generator=generator)


def _model(device: Literal["cpu", "meta"] = "cpu") -> Pi0:
    model = build_model(get_config("pi0-tiny"), seed=0, device=device)
    for parameter in model.unused_parameters():  # as training does
        parameter.requires_grad_(False)
    return model


def _one_step(model: torch.nn.Module, index: slice) -> torch.optim.Optimizer:
    batch, noise, time = _fixed_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(model, optimizer, batch.select(index), noise[index], time[index], 1.0, precision="fp32")
    return optimizer


def _rank(rank: int, init_file: str, out: str, fsdp: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    # Under FSDP only the main rank builds real weights; the other builds on `meta` and receives shards.
    model = _model("meta" if fsdp and rank else "cpu")
    full = _model().state_dict() if fsdp and not rank else None
    wrapped = wrap_model(model, Ranks(rank, 2, 0), torch.device("cpu"), fsdp, full_weights=full)
    optimizer = _one_step(wrapped, slice(2 * rank, 2 * rank + 2))
    weights, _ = full_state(wrapped, optimizer)  # gathered to rank 0, as checkpoints are
    if rank == 0:
        torch.save(weights, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_take_the_same_step_as_one_process(tmp_path: Path, sharding: str) -> None:
    out = tmp_path / "weights.pt"
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(out), sharding == "fsdp"), nprocs=2, join=True)
    single = _model()
    start = {name: t.clone() for name, t in single.state_dict().items()}
    _one_step(single, slice(0, 4))
    gathered = torch.load(out, weights_only=True)
    assert set(gathered) == set(start)
    for name, tensor in single.state_dict().items():
        assert torch.allclose(gathered[name], tensor, atol=1e-6), name
    assert not torch.equal(start["action_out_proj.weight"], single.state_dict()["action_out_proj.weight"])


def test_the_ema_forgets_the_random_start_within_a_short_run() -> None:
    layer = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    ema = Ema(layer, decay=0.999)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update(layer)  # step 0: decay 1/10, the average is mostly the trained weights already
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 2), 0.9))
    for _ in range(999):
        ema.update(layer)
    assert float(ema.shadow["weight"].min()) > 0.999  # a plain 0.999 decay would still hold 37 % of zeros
    assert ema.decay_at(10**6) == 0.999 and Ema(layer, 0.99, step=500).step == 500


# -- Resuming restores the optimizer's moments, sharded for however many processes now run
def _restore(rank: int, world: int, init_file: str, saved: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ranks = Ranks(rank, world, 0)
    model = _model("meta" if rank else "cpu")
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    weights, moments = torch.load(saved, weights_only=True) if ranks.main else ({}, {})
    wrapped = wrap_model(model, ranks, torch.device("cpu"), True, full_weights=weights or None)
    optimizer = make_optimizer(wrapped, lr=1e-3, weight_decay=0.0)
    restore_optimizer(wrapped, optimizer, names, moments, ranks)
    batch, noise, time = _fixed_batch()
    index = slice(rank, rank + 1)  # one sample a rank: the same batch whatever the process count
    train_step(wrapped, optimizer, batch.select(index), noise[index], time[index], 1.0, precision="fp32")
    gathered = full_state(wrapped, optimizer)
    if ranks.main:
        torch.save(gathered, out)
    dist.destroy_process_group()


def test_fsdp_restores_the_optimizer_on_another_process_count(tmp_path: Path) -> None:
    """The moments of an unsharded step, put back into FSDP optimizers on 2 and 3 processes: the next
    step is the one an unsharded optimizer takes (FSDP resumes used to fail at the first step)."""
    model = _model()
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    batch, noise, time = _fixed_batch()
    train_step(model, optimizer, batch.select(slice(0, 2)), noise[:2], time[:2], 1.0, precision="fp32")
    saved = tmp_path / "saved.pt"
    torch.save(full_state(model, optimizer), saved)
    train_step(model, optimizer, batch.select(slice(0, 2)), noise[:2], time[:2], 1.0, precision="fp32")
    expected_weights, expected_moments = full_state(model, optimizer)
    for world in (2, 3):
        out = tmp_path / f"after-{world}.pt"
        mp.spawn(_restore, args=(world, str(tmp_path / f"init{world}"), str(saved), str(out)), nprocs=world)
        if world == 3:  # three samples, not two: only check that the moments came back and advanced
            _, moments = torch.load(out, weights_only=True)
            assert {int(m["step"]) for m in moments.values()} == {2}
            continue
        weights, moments = torch.load(out, weights_only=True)
        for name, tensor in expected_weights.items():
            torch.testing.assert_close(weights[name], tensor, atol=2e-5, rtol=0, msg=name)
        for name, values in expected_moments.items():
            for key, value in values.items():
                torch.testing.assert_close(moments[name][key], value, atol=1e-6, rtol=1e-4, msg=name + key)


# -- `rig train` under torchrun: CPU processes over gloo, as users run it on GPUs over NCCL
def torchrun_train(processes: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(processes), "-m", "rig.cli", "train", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def optimizer_step_count(checkpoint: Path) -> int:
    with safe_open(str(checkpoint / TRAIN_STATE_FILE), framework="pt") as file:
        return int(file.get_tensor("optimizer.action_out_proj.weight.step"))


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_torchrun_trains_saves_and_resumes_on_2_then_2_or_3_processes(
    store: Path, tmp_path: Path, sharding: str
) -> None:
    flags = [*TINY, "--device", "cpu", "--log-every", "1", *(["--fsdp"] if sharding == "fsdp" else [])]
    first = tmp_path / "run"
    result = torchrun_train(2, "--store", str(store), *flags, "--steps", "2", "--out", str(first))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on cpu × 2" in result.stdout and "done: step 2" in result.stdout
    for processes in (2, 3) if sharding == "fsdp" else (3,):
        run = tmp_path / f"resumed-on-{processes}"
        shutil.copytree(first, run)
        result = torchrun_train(processes, "--store", str(store), *flags, "--steps", "4", "--resume",
                                "--out", str(run))  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resuming {run} from step 2" in result.stdout and f"on cpu × {processes}" in result.stdout
        assert optimizer_step_count(run / "checkpoints/00000004") == 4  # the moments went on from step 2
        model, meta = load_policy(run)
        assert meta.step == 4 and all(torch.isfinite(p).all() for p in model.parameters())


def test_one_seed_gives_the_same_checkpoint_bytes(store: Path, tmp_path: Path) -> None:
    def checkpoint_bytes(seed: int, name: str) -> bytes:
        torch.manual_seed(len(name))  # whatever the global generator holds must not matter
        settings = TrainSettings(store=store, config="pi0-tiny", steps=2, batch_size=4, workers=0,
                                 out=tmp_path / name, seed=seed)  # fmt: skip
        return (train(settings, say=lambda _: None).checkpoint / MODEL_FILE).read_bytes()

    first = checkpoint_bytes(7, "a")
    assert checkpoint_bytes(7, "bb") == first
    assert checkpoint_bytes(8, "ccc") != first


def test_ema_with_fsdp_is_refused_before_anything_is_written(store: Path, tmp_path: Path) -> None:
    settings = TrainSettings(store=store, config="pi0-tiny", out=tmp_path / "run", fsdp=True, ema_decay=0.99)
    with pytest.raises(TrainingError, match="--ema with --fsdp"):
        train(settings, say=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_each_rank_takes_its_own_gpu_and_the_backend_follows_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 1)) == "nccl"
    assert resolve_device("cpu", Ranks(1, 2, 1)) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda", Ranks())
        # No GPU here: stand in for the CUDA runtime's two calls to see which GPU each rank takes.
        chosen: list[torch.device] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    ranks = Ranks(rank=3, world_size=4, local_rank=1)
    assert resolve_device("cuda", ranks) == torch.device("cuda", 1)
    assert resolve_device(None, ranks) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", Ranks()) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="all 4 processes on one GPU"):
        resolve_device("cuda:0", ranks)


def test_a_time_budget_ends_the_run_in_time_with_the_schedule_fitted_to_it(
    store: Path, tmp_path: Path
) -> None:
    settings = TrainSettings(store=store, config="pi0-tiny", steps=100_000, minutes=0.2, batch_size=4,
                             workers=0, out=tmp_path / "run", log_every=1)  # fmt: skip
    result = train(settings, say=lambda _: None)
    assert not result.interrupted and 1 <= result.step < settings.steps  # ended by the clock, complete
    rows = list(csv.DictReader((result.run / "loss.csv").open()))
    assert int(rows[-1]["step"]) == result.step
    assert float(rows[-1]["lr"]) <= 0.2 * settings.peak_lr()  # the decay ran to the budget's end


def test_resume_continues_with_the_runs_own_settings_unless_told_otherwise(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from policy.train import resume_settings
    from rig.cli import main

    run = tmp_path / "run"
    train(TrainSettings(store=store, out=run, config="pi0-tiny", steps=2, batch_size=4, workers=0, lr=1e-3,
                        seed=5, log_every=1), say=lambda _: None)  # fmt: skip
    resumed = resume_settings(store, run)
    assert (resumed.steps, resumed.lr, resumed.batch_size, resumed.seed) == (2, 1e-3, 4, 5)
    assert resumed.config == "pi0-tiny" and resumed.resume and resumed.out == run
    assert main(["train", "--store", str(store), "--resume", "--out", str(run)]) == 1  # not to 1000
    assert "already at step 2" in capsys.readouterr().err
    more = resume_settings(store, run, steps=3)
    assert (more.steps, more.lr) == (3, 1e-3)
    assert train(more, say=lambda _: None).step == 3
