"""What changes when training runs on several processes (torchrun): where a rank sits and on which
device, how the model is built and wrapped (DDP, or FSDP2 for the 3B size), and how state is
gathered, restored and agreed on.

Checkpoints hold full tensors by parameter name whatever the wrapping, so a run can resume on a
different number of processes: weights and optimizer moments go back through
`torch.distributed.checkpoint.state_dict`, which shards them as the optimizer's parameters are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from policy.config import Pi0Config
from policy.pi0 import Pi0

Moments = Mapping[str, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun job (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )


class DeviceError(ValueError):
    """A device request that cannot work for this job; the message says what to ask for instead."""


def resolve_device(asked: str | None, ranks: Ranks) -> torch.device:
    """This rank's device. `cuda` without an index (or no request, where CUDA exists) means this rank's
    own GPU, cuda:<local rank>; an explicit index is taken as given on one process only, since every
    rank would share that one GPU."""
    if asked is None:
        asked = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(asked)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {asked}: this machine has no CUDA device (or torch is a CPU build)")
    if device.index is not None and ranks.world_size > 1:
        raise DeviceError(
            f"--device {asked} would put all {ranks.world_size} processes on one GPU; "
            "give --device cuda and each process takes cuda:<local rank>"
        )
    device = torch.device("cuda", ranks.local_rank if device.index is None else device.index)
    torch.cuda.set_device(device)
    return device


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes: decided by the device this job trains on."""
    return "nccl" if device.type == "cuda" else "gloo"


def join_process_group(ranks: Ranks, device: torch.device) -> None:
    if ranks.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(device), device_id=device if device.type == "cuda" else None)


def leave_process_group(ranks: Ranks) -> None:
    if ranks.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def build_model(config: Pi0Config, seed: int, device: Literal["cpu", "meta"] = "cpu") -> Pi0:
    """π0 with its random initialization drawn from `seed` alone (the CPU's global generator is left as
    it was), so two runs with one seed start from the same weights whatever ran before. On `meta`
    nothing is allocated: the FSDP ranks that only receive their shards build it there."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.random.default_generator.manual_seed(seed)
        return Pi0(config)


def sharded(ranks: Ranks, fsdp: bool) -> bool:
    """Whether weights are sharded (FSDP2 on several processes); on one process --fsdp changes nothing."""
    return fsdp and ranks.world_size > 1


def wrap_model(
    model: Pi0,
    ranks: Ranks,
    device: torch.device,
    fsdp: bool,
    bf16: bool = False,
    full_weights: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """DDP, or FSDP2 with one unit per layer, around the model (nothing on one process).

    Under FSDP the main rank gives the `full_weights` and every rank's shards are filled from them
    (the other ranks pass None); the model may be built on `meta` (`build_model`), so that only this
    rank's shards are ever allocated, on `device`. With `bf16`, the layers and the token embedding
    are gathered and computed in bf16 and their gradients reduced in fp32; the root unit (vision
    embeddings, projections, final norms) stays fp32, as it is under autocast. DDP starts every rank
    from the main rank's weights by itself.
    """
    if ranks.world_size == 1:
        return model.to(device)
    if fsdp:
        if ranks.main and full_weights is None:
            raise ValueError("FSDP: the main rank must give the full weights to shard")
        return _fully_shard(model, device, bf16, full_weights)
    from torch.nn.parallel import DistributedDataParallel

    model.to(device)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _fully_shard(
    model: Pi0, device: torch.device, bf16: bool, full_weights: Mapping[str, torch.Tensor] | None
) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    from policy.gemma import GemmaLayer
    from policy.siglip import VisionLayer

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # A bf16 unit also takes bf16 inputs: the Gemma streams already are under autocast; the vision
    # tower's stream becomes bf16 as in openpi's bf16 model (its LayerNorms need one dtype on the CPU).
    low = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    plain = MixedPrecisionPolicy()
    units: list[nn.Module] = [m for m in model.modules() if isinstance(m, GemmaLayer | VisionLayer)]
    if model.language.embed_tokens is not None:
        units.append(model.language.embed_tokens)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=low if bf16 else plain)
        if isinstance(unit, GemmaLayer):
            register_fsdp_forward_method(unit, "attention_inputs")
            register_fsdp_forward_method(unit, "finish")
    fully_shard(model, mesh=mesh, mp_policy=plain)
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device=device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, dict(full_weights or {}), options=options)
    return model


def restore_optimizer(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer, names: list[str], moments: Moments, ranks: Ranks
) -> None:
    """Put saved moments (full tensors by parameter name) back into the optimizer, sharded as its
    parameters are. `names` are the optimizer's parameters in its order. Under FSDP the main rank's
    moments are broadcast and the other ranks pass none. Parameters that never received a gradient
    have no moments, so a subset is normal; a name the run does not train means the flags changed."""
    foreign = sorted(set(moments) - set(names))
    if foreign:
        raise ValueError(
            f"the checkpoint's optimizer state has {len(foreign)} parameters this run does not train "
            f"(e.g. {foreign[0]}); resume with the flags it was trained with (--freeze-prefix?)"
        )
    broadcast = ranks.world_size > 1 and not _replicated(wrapped)
    state: dict[str, Any] = {}
    if ranks.main or not broadcast:
        state = {
            "state": {name: dict(moments[name]) for name in names if name in moments},
            "param_groups": _named_groups(optimizer, names),
        }
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast)
    set_optimizer_state_dict(wrapped, optimizer, state, options=options)


def _named_groups(optimizer: torch.optim.Optimizer, names: list[str]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups with parameter names in place of the parameters."""
    remaining = iter(names)
    groups = [
        {**{key: value for key, value in group.items() if key != "params"}, "params": []}
        for group in optimizer.param_groups
    ]
    for group, source in zip(groups, optimizer.param_groups, strict=True):
        group["params"] = [next(remaining) for _ in source["params"]]
    if next(remaining, None) is not None:
        raise ValueError("more parameter names than the optimizer has parameters")
    return groups


def _replicated(wrapped: nn.Module) -> bool:
    return not any(isinstance(p, DTensor) for p in wrapped.parameters())


def full_state(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Every weight and optimizer moment by parameter name, gathered to rank 0 under DDP/FSDP."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights: dict[str, Any] = dict(get_model_state_dict(wrapped, options=options))
    optimizer_state: dict[str, Any] = dict(get_optimizer_state_dict(wrapped, optimizer, options=options))
    moments = {
        str(name): {str(key): torch.as_tensor(value) for key, value in values.items()}
        for name, values in optimizer_state.get("state", {}).items()
    }
    return weights, moments


def mean_over_ranks(value: torch.Tensor, ranks: Ranks) -> float:
    if ranks.world_size > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= ranks.world_size
    return float(value)


def agree(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when any rank was asked to stop, so all ranks save and leave together."""
    if ranks.world_size == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()  # this rank's GPU: resolve_device made it the current one
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)


def agree_steps(steps: int, ranks: Ranks) -> int:
    """The smallest of the ranks' step counts, on every rank (a time budget's length, say)."""
    if ranks.world_size == 1:
        return steps
    tensor = torch.tensor([steps], dtype=torch.long)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())
