"""Load published π0 weights (LeRobot, openpi-converted, or our own) into `Pi0`, by name, from safetensors.

Checkpoints are only ever read with safetensors (never unpickled), tensor by tensor, so a 3B model does not
need twice its size in memory. Each published layout is a table of name-prefix rewrites onto the model's
own ("native") parameter names; the same table, read backwards, writes the published layouts for export.
An export holds every name the peer's π0 module has, so LeRobot's `PI0Policy` and openpi's PyTorch
`PI0Pytorch` load it with a strict `load_state_dict`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from policy.pi0 import Pi0

Layout = Literal["native", "lerobot", "openpi"]
RuleKind = Literal["weight", "tied", "ignored"]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Rule:
    """One prefix rewrite: checkpoint names starting with `ckpt` become `native` + the rest.

    `weight` rules fill the model's tensors; `tied` is the language model's output head, which shares the
    token embedding and so fills it only when the checkpoint lacks the embedding; `ignored` names are
    known but unused by π0. `written` marks the names a layout writes today, as opposed to older names
    it is still read from.
    """

    ckpt: str
    native: str
    layout: Layout
    kind: RuleKind
    written: bool


_ROOTS: dict[Layout, str] = {"lerobot": "model.", "openpi": ""}
_PALIGEMMA = "paligemma_with_expert.paligemma."
_EXPERT = "paligemma_with_expert.gemma_expert."
_EMBED = "language.embed_tokens."

# (name under the root, native prefix, kind, written). Newer transformers (≥ 4.52) nest PaliGemma's parts
# under `paligemma.model.`; older checkpoints use `paligemma.language_model.model.` and friends.
_BODY: tuple[tuple[str, str, RuleKind, bool], ...] = (
    (_PALIGEMMA + "model.vision_tower.vision_model.", "vision.", "weight", True),
    (_PALIGEMMA + "vision_tower.vision_model.", "vision.", "weight", False),
    (_PALIGEMMA + "model.multi_modal_projector.linear.", "projector.", "weight", True),
    (_PALIGEMMA + "multi_modal_projector.linear.", "projector.", "weight", False),
    (_PALIGEMMA + "model.language_model.", "language.", "weight", True),
    (_PALIGEMMA + "language_model.model.", "language.", "weight", False),
    (_PALIGEMMA + "lm_head.", _EMBED, "tied", True),
    (_PALIGEMMA + "language_model.lm_head.", _EMBED, "tied", False),
    (_EXPERT + "model.", "expert.", "weight", True),
    (_EXPERT + "lm_head.", "", "ignored", False),  # written by export_state_dict
    ("state_proj.", "state_proj.", "weight", True),
    ("action_in_proj.", "action_in_proj.", "weight", True),
    ("action_out_proj.", "action_out_proj.", "weight", True),
)
# π0's time MLP is `action_time_mlp_*` in LeRobot and in openpi's PyTorch π0 alike; `time_mlp_*` is π0.5's
# name, which this project's openpi export once wrote for π0, so it is still read.
_TIME_MLP = "action_time_mlp_"
_OLD_TIME_MLP = "time_mlp_"


def _layout_rules(layout: Layout) -> Iterator[Rule]:
    root = _ROOTS[layout]
    for name, native, kind, written in _BODY:
        yield Rule(root + name, native, layout, kind, written)
    for part in ("in.", "out."):
        yield Rule(root + _TIME_MLP + part, _TIME_MLP + part, layout, "weight", True)
        yield Rule(root + _OLD_TIME_MLP + part, _TIME_MLP + part, layout, "weight", False)


def _build_rules() -> tuple[Rule, ...]:
    """All layouts' rules, longest checkpoint prefix first; identity rewrites are the native layout's."""
    rules = [rule for layout in _ROOTS for rule in _layout_rules(layout) if rule.ckpt != rule.native]
    prefixes = [rule.ckpt for rule in rules]
    if len(set(prefixes)) != len(prefixes):
        raise AssertionError("two weight-name rules share one checkpoint prefix")
    return tuple(sorted(rules, key=lambda rule: len(rule.ckpt), reverse=True))


RULES: tuple[Rule, ...] = _build_rules()


def _match(key: str) -> Rule | None:
    return next((rule for rule in RULES if key.startswith(rule.ckpt)), None)


def _rewrite(key: str, rule: Rule) -> str:
    return rule.native + key[len(rule.ckpt) :]


def map_key(key: str) -> str | None:
    """The model's name for a checkpoint key; None for known keys π0 does not load as such (tied, unused).

    Names no rule knows are returned unchanged: native names then load as is, and anything else shows up
    as unexpected.
    """
    rule = _match(key)
    if rule is None:
        return key
    return _rewrite(key, rule) if rule.kind == "weight" else None


def export_keys(name: str, layout: Layout) -> list[str]:
    """The checkpoint names a native name is written under in `layout` (two for the tied embedding)."""
    if layout == "native":
        return [name]
    if layout not in _ROOTS:
        raise ValueError(f"unknown weight layout {layout!r}; known: native, {', '.join(_ROOTS)}")
    names = [
        rule.ckpt + name[len(rule.native) :]
        for rule in RULES
        if rule.layout == layout and rule.written and rule.kind != "ignored" and name.startswith(rule.native)
    ]
    # The embedding matches both its own rule and the tied head; nothing else may match twice.
    return names or [name]


class WeightFileError(ValueError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or inconsistent with its index."""


class WeightShapeError(ValueError):
    """A checkpoint tensor whose shape differs from the model's: usually the wrong config (size) for it."""

    def __init__(self, ckpt_key: str, key: str, ckpt_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
        self.ckpt_key, self.key, self.ckpt_shape, self.shape = ckpt_key, key, ckpt_shape, shape
        super().__init__(
            f"checkpoint tensor {ckpt_key!r} has shape {list(ckpt_shape)}, but the model's {key!r} "
            f"has shape {list(shape)}; is the model built with the config this checkpoint was trained with?"
        )


@dataclass(frozen=True)
class LoadReport:
    """What a load did: `missing` are model names left as they were, the others checkpoint names."""

    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    layout: str

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        def some(names: tuple[str, ...]) -> str:
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            return f" ({shown})" if names else ""

        return (
            f"loaded {self.loaded} tensors ({self.layout} layout); {len(self.missing)} missing"
            f"{some(self.missing)}, {len(self.unexpected)} unexpected{some(self.unexpected)}, "
            f"{len(self.ignored)} ignored"
        )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn safetensors' and the OS's errors into one message that says what to do."""
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise WeightFileError(
            f"cannot read weights from {path}: {error}. The file is missing, truncated or corrupt; "
            "re-download or re-convert it."
        ) from error


def _shards(source: Path) -> dict[Path, tuple[str, ...] | None]:
    """The safetensors files behind `source`, each with the keys to read from it (None: all of them)."""
    if source.is_dir():
        if (source / SINGLE_FILE).is_file():
            return {source / SINGLE_FILE: None}
        if (source / INDEX_FILE).is_file():
            return _indexed_shards(source / INDEX_FILE)
        raise WeightFileError(f"{source} holds neither {SINGLE_FILE} nor {INDEX_FILE}")
    if source.name.endswith(".json"):
        return _indexed_shards(source)
    if not source.is_file():
        raise WeightFileError(f"no weights at {source}")
    return {source: None}


def _indexed_shards(index: Path) -> dict[Path, tuple[str, ...] | None]:
    with _reading(index):
        text = index.read_text()
    try:
        weight_map = json.loads(text)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as error:
        raise WeightFileError(f"{index} is not a safetensors index ({error}); re-download it") from error
    shards: dict[Path, list[str]] = {}
    for key, file in weight_map.items():
        shards.setdefault(index.parent / str(file), []).append(str(key))
    return {path: tuple(keys) for path, keys in shards.items()}


def _headers(shards: Mapping[Path, tuple[str, ...] | None]) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """Every checkpoint key with its file and shape, read from the headers only."""
    found: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for path, wanted in shards.items():
        with _reading(path), safe_open(str(path), framework="pt") as file:
            present = set(file.keys())
            keys = sorted(present) if wanted is None else wanted
            for key in keys:
                if key not in present:
                    raise WeightFileError(f"{path} lacks {key!r}, which its index lists; re-download it")
                found[key] = (path, tuple(file.get_slice(key).get_shape()))
    return found


@dataclass(frozen=True)
class _Plan:
    """Which checkpoint key fills which model tensor, decided before anything is copied."""

    copies: dict[str, str]  # checkpoint key → model name
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    layout: str


def _plan(ckpt_keys: list[str], targets: Mapping[str, torch.Tensor]) -> _Plan:
    owners: dict[str, str] = {}  # model name → the checkpoint key that fills it
    tied: dict[str, str] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    layouts: set[str] = set()
    for key in ckpt_keys:
        rule = _match(key)
        name = key if rule is None else _rewrite(key, rule)
        if rule is not None and rule.kind == "ignored":
            ignored.append(key)
        elif rule is not None and rule.kind == "tied":
            tied[name] = key
        elif name not in targets:
            unexpected.append(key)
        elif name in owners:
            raise WeightFileError(
                f"checkpoint keys {owners[name]!r} and {key!r} both fill the model's {name!r}"
            )
        else:
            owners[name] = key
            layouts.add("native" if rule is None else rule.layout)
    for name, key in tied.items():
        if name in targets and name not in owners:
            owners[name] = key
        else:
            ignored.append(key)
    named = sorted(layouts - {"native"}) or sorted(layouts) or ["unknown"]
    return _Plan(
        copies={key: name for name, key in owners.items()},
        missing=tuple(name for name in targets if name not in owners),
        unexpected=tuple(unexpected),
        ignored=tuple(ignored),
        layout="+".join(named),
    )


def load_pi0_weights(model: torch.nn.Module, source: Path) -> LoadReport:
    """Copy a checkpoint's tensors into `model` (a `.safetensors` file, a directory, or a shard index).

    Every shape is checked before the first copy, so a mismatch leaves the model untouched. Tensors are
    read one at a time and cast to the model's dtypes.
    """
    source = Path(source)
    shards = _shards(source)
    headers = _headers(shards)
    targets = model.state_dict(keep_vars=True)  # persistent parameters and buffers, by native name
    plan = _plan(list(headers), targets)
    for key, name in plan.copies.items():
        shape, expected = headers[key][1], tuple(targets[name].shape)
        if shape != expected:
            raise WeightShapeError(key, name, shape, expected)
    with torch.no_grad():
        for path in shards:
            keys = [key for key in plan.copies if headers[key][0] == path]
            if not keys:
                continue
            with _reading(path), safe_open(str(path), framework="pt") as file:
                for key in keys:
                    target = targets[plan.copies[key]]
                    target.data.copy_(file.get_tensor(key).to(target.dtype))
    return LoadReport(
        loaded=len(plan.copies),
        missing=plan.missing,
        unexpected=plan.unexpected,
        ignored=plan.ignored,
        layout=plan.layout,
    )


def export_state_dict(model: Pi0, layout: Layout = "native") -> dict[str, torch.Tensor]:
    """The model's tensors under `layout`'s names, on the model's device (`meta` included).

    The published layouts also carry the language model's head, tied to (equal to) the token embedding,
    and the action expert's head, which π0 never uses (zeros here): the peers' modules have both, so a
    strict load needs them.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        for index, key in enumerate(export_keys(name, layout)):
            data = tensor.detach()
            tensors[key] = data.clone() if index else data  # safetensors refuses shared storage
    if layout != "native":
        width, expert = model.config.vocab_size, model.expert.norm.weight
        head = _ROOTS[layout] + _EXPERT + "lm_head.weight"
        tensors[head] = torch.zeros(width, expert.shape[0], dtype=torch.bfloat16, device=expert.device)
    return tensors


def save_pi0_weights(model: Pi0, path: Path, layout: Layout = "native") -> None:
    """Write the model's weights as one safetensors file under `layout`'s names (`export_state_dict`)."""
    tensors = {key: t.cpu().contiguous() for key, t in export_state_dict(model, layout).items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt", "layout": layout})


# config.json field → Pi0Config field. LeRobot pads state and actions separately; π0 here pads both to one
# width, so the two must agree.
_CONFIG_FIELDS: dict[str, str] = {
    "max_action_dim": "action_dim",
    "max_state_dim": "action_dim",
    "action_dim": "action_dim",
    "chunk_size": "action_horizon",
    "action_horizon": "action_horizon",
    "num_steps": "num_steps",
    "num_inference_steps": "num_steps",  # LeRobot's name
}


def load_config_json(path: Path) -> dict[str, int]:
    """Pi0Config overrides (action_dim, action_horizon, num_steps) from a checkpoint's `config.json`."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    with _reading(path):
        text = path.read_text()
    try:
        values: Any = json.loads(text)
    except ValueError as error:
        raise WeightFileError(f"{path} is not JSON ({error}); re-download it") from error
    if not isinstance(values, dict):
        raise WeightFileError(f"{path} is not a JSON object")
    overrides: dict[str, int] = {}
    sources: dict[str, str] = {}
    for field, target in _CONFIG_FIELDS.items():
        if field not in values:
            continue
        value = values[field]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{path}: {field} must be a positive integer, not {value!r}")
        if overrides.setdefault(target, value) != value:
            raise ValueError(
                f"{path}: {sources[target]}={overrides[target]} and {field}={value} disagree, but π0 "
                f"here uses one {target} for both"
            )
        sources.setdefault(target, field)
    return overrides
