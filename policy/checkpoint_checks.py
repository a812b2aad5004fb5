"""What a checkpoint must satisfy before it is used, checked when it is opened.

A damaged or foreign checkpoint should fail in one sentence at load time, not at every inference
(NaN weights, statistics of the wrong length), inside a torch layer (a string where a size belongs)
or by trying to allocate what the weight file never held (a config claiming a huge layer): the
config is checked against the weight file's header before any weight is allocated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from policy.config import Pi0Config
from policy.normalize import Normalizer
from policy.pi0 import Pi0
from rig.step import STATE_DIM


def check_statistics(config: Pi0Config, normalizer: Normalizer) -> None:
    """ValueError unless the config fits the robot's vectors and the statistics are usable ones."""
    if config.action_dim < STATE_DIM:
        raise ValueError(f"action_dim {config.action_dim} is smaller than the robot's {STATE_DIM} joints")
    for what, stats in (("state", normalizer.state), ("actions", normalizer.actions)):
        if stats.dim != STATE_DIM:
            raise ValueError(f"norm stats for the {what} have {stats.dim} values, the robot has {STATE_DIM}")
        for name, values in stats.vectors().items():
            if not np.isfinite(values).all():
                raise ValueError(f"norm stats {what}.{name} hold NaN or inf")
        if (stats.std < 0).any():
            raise ValueError(f"norm stats {what}.std hold negative values")


def check_weight_file(config: Pi0Config, path: Path) -> None:
    """ValueError unless `path` holds tensors of the shapes `config` makes. Reads only the file's
    header and builds the model on torch's meta device, so nothing of the weights' size is allocated."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in Pi0(config).state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as file:
            found = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118
    except (OSError, SafetensorError):
        return  # an unreadable file: loading it says so, with what to do
    for name in sorted(expected.keys() & found.keys()):
        if expected[name] != found[name]:
            raise ValueError(
                f"the config makes {name} {list(expected[name])}, {path.name} holds {list(found[name])}: "
                "the config does not belong to these weights"
            )
    wanted, held = (sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, found))
    if wanted > held:
        raise ValueError(
            f"the config makes a model of {wanted:,} values, {path.name} holds {held:,}: "
            "the config does not belong to these weights"
        )


def check_finite_weights(model: torch.nn.Module) -> None:
    """ValueError naming the tensors that hold NaN or inf (a model trained into divergence, a damaged
    file): every chunk such a model makes would be refused."""
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        raise ValueError(
            f"{len(broken)} weight tensor(s) hold NaN or inf (e.g. {broken[0]}): the run diverged or the "
            "file is damaged"
        )
