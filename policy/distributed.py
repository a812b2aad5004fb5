"""What changes when training runs on several processes (torchrun): where a rank sits, how the
model is wrapped (DDP, or FSDP2 for the 3B size), and how state is gathered and agreed on.

Checkpoints hold full tensors by parameter name whatever the wrapping, so a run can resume on a
different number of GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from policy.pi0 import Pi0


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


def wrap_model(model: Pi0, ranks: Ranks, device: torch.device, fsdp: bool) -> nn.Module:
    """DDP, or FSDP2 with one unit per layer, around the model (nothing on one process)."""
    if ranks.world_size == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        from policy.gemma import GemmaLayer
        from policy.siglip import VisionLayer

        for module in model.modules():
            if isinstance(module, GemmaLayer | VisionLayer):
                fully_shard(module)
            if isinstance(module, GemmaLayer):
                register_fsdp_forward_method(module, "attention_inputs")
                register_fsdp_forward_method(module, "finish")
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def restore_optimizer(
    optimizer: torch.optim.Optimizer, names: list[str], moments: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Put saved moments back by name. Parameters that never received a gradient (the prefix's last
    MLP, which no action token reads) have no moments, so a subset is normal; a name the run does
    not train means the flags changed."""
    foreign = sorted(set(moments) - set(names))
    if foreign:
        raise ValueError(
            f"the checkpoint's optimizer state has {len(foreign)} parameters this run does not train "
            f"(e.g. {foreign[0]}); resume with the flags it was trained with (--freeze-prefix?)"
        )
    state = optimizer.state_dict()
    state["state"] = {index: dict(moments[name]) for index, name in enumerate(names) if name in moments}
    optimizer.load_state_dict(state)


def full_state(
    wrapped: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """Every weight and optimizer moment by parameter name, gathered to rank 0 under DDP/FSDP."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

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
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return bool(tensor.item() > 0)
