"""Loading π0 weights by name from real safetensors files, in each published layout."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from policy.config import get_config
from policy.pi0 import Pi0
from policy.weights import (
    WeightFileError,
    WeightShapeError,
    export_keys,
    export_state_dict,
    load_config_json,
    load_pi0_weights,
    map_key,
    save_pi0_weights,
)

LEROBOT = "model.paligemma_with_expert."
OPENPI = "paligemma_with_expert."

Tensors = dict[str, torch.Tensor]


def tiny(seed: int, **overrides: int) -> Pi0:
    torch.manual_seed(seed)
    return Pi0(get_config("pi0-tiny", **overrides))


def edit_file(path: Path, edit: Callable[[Tensors], Tensors]) -> None:
    save_file(edit(load_file(str(path))), str(path))


def rename(old: str, new: str) -> Callable[[Tensors], Tensors]:
    return lambda tensors: {key.replace(old, new): value for key, value in tensors.items()}


def assert_same(model: Pi0, source: Pi0) -> None:
    expected = source.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # LeRobot, transformers ≥ 4.52
        (
            LEROBOT + "paligemma.model.vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight",
            "vision.encoder.layers.3.mlp.fc1.weight",
        ),
        (LEROBOT + "paligemma.model.multi_modal_projector.linear.bias", "projector.bias"),
        (
            LEROBOT + "paligemma.model.language_model.layers.0.self_attn.o_proj.weight",
            "language.layers.0.self_attn.o_proj.weight",
        ),
        (LEROBOT + "paligemma.model.language_model.embed_tokens.weight", "language.embed_tokens.weight"),
        (LEROBOT + "gemma_expert.model.norm.weight", "expert.norm.weight"),
        ("model.state_proj.weight", "state_proj.weight"),
        ("model.action_time_mlp_out.bias", "action_time_mlp_out.bias"),
        # LeRobot, older transformers
        (LEROBOT + "paligemma.language_model.model.norm.weight", "language.norm.weight"),
        (
            LEROBOT + "paligemma.vision_tower.vision_model.post_layernorm.weight",
            "vision.post_layernorm.weight",
        ),
        (LEROBOT + "paligemma.multi_modal_projector.linear.weight", "projector.weight"),
        # openpi-converted, both generations
        (
            OPENPI + "paligemma.model.language_model.layers.1.mlp.up_proj.weight",
            "language.layers.1.mlp.up_proj.weight",
        ),
        (OPENPI + "paligemma.language_model.model.embed_tokens.weight", "language.embed_tokens.weight"),
        (
            OPENPI + "paligemma.vision_tower.vision_model.embeddings.patch_embedding.bias",
            "vision.embeddings.patch_embedding.bias",
        ),
        (
            OPENPI + "gemma_expert.model.layers.1.input_layernorm.weight",
            "expert.layers.1.input_layernorm.weight",
        ),
        ("time_mlp_in.weight", "action_time_mlp_in.weight"),
        ("action_out_proj.bias", "action_out_proj.bias"),
        # tied heads and unused parts: known, not loaded as such
        (LEROBOT + "paligemma.lm_head.weight", None),
        (LEROBOT + "paligemma.language_model.lm_head.weight", None),
        (LEROBOT + "gemma_expert.lm_head.weight", None),
        (OPENPI + "paligemma.lm_head.weight", None),
        (OPENPI + "gemma_expert.lm_head.weight", None),
        # native names and unknown names pass through
        ("language.layers.0.mlp.gate_proj.weight", "language.layers.0.mlp.gate_proj.weight"),
        ("vision.post_layernorm.bias", "vision.post_layernorm.bias"),
        ("something.else", "something.else"),
    ],
)
def test_map_key(key: str, expected: str | None) -> None:
    assert map_key(key) == expected


@pytest.mark.parametrize("layout", ["native", "lerobot", "openpi"])
def test_exported_names_map_back(layout: str) -> None:
    for name in tiny(0).state_dict():
        keys = export_keys(name, layout)  # type: ignore[arg-type]
        assert map_key(keys[0]) == name
        assert len(keys) == (2 if name == "language.embed_tokens.weight" and layout != "native" else 1)


def test_lerobot_layout_fills_every_parameter(tmp_path: Path) -> None:
    source, path = tiny(0), tmp_path / "model.safetensors"
    save_pi0_weights(source, path, layout="lerobot")
    expert_head = LEROBOT + "gemma_expert.lm_head.weight"
    keys = load_file(str(path)).keys()
    assert "model.action_time_mlp_in.weight" in keys and LEROBOT + "paligemma.lm_head.weight" in keys
    assert expert_head in keys

    model = tiny(1)
    report = load_pi0_weights(model, tmp_path)  # the directory, as downloaded

    assert_same(model, source)
    assert (report.missing, report.unexpected, report.layout) == ((), (), "lerobot")
    assert sorted(report.ignored) == sorted([LEROBOT + "paligemma.lm_head.weight", expert_head])
    assert report.loaded == len(source.state_dict()) and report.complete
    assert report.summary().startswith(f"loaded {report.loaded} tensors (lerobot layout); 0 missing")


def test_openpi_layout_fills_the_embedding_from_the_tied_head(tmp_path: Path) -> None:
    source, path = tiny(0), tmp_path / "weights.safetensors"
    save_pi0_weights(source, path, layout="openpi")
    embed = OPENPI + "paligemma.model.language_model.embed_tokens.weight"
    edit_file(path, lambda tensors: {key: value for key, value in tensors.items() if key != embed})
    keys = load_file(str(path)).keys()
    assert "action_time_mlp_out.bias" in keys and OPENPI + "paligemma.lm_head.weight" in keys
    assert embed not in keys and "time_mlp_out.bias" not in keys

    model = tiny(1)
    report = load_pi0_weights(model, path)

    assert_same(model, source)
    assert (report.missing, report.unexpected, report.layout) == ((), (), "openpi")
    assert report.ignored == (OPENPI + "gemma_expert.lm_head.weight",)


def test_the_time_mlp_under_pi05_names_still_loads(tmp_path: Path) -> None:
    """This project's openpi export once wrote π0's time MLP under π0.5's `time_mlp_*` names."""
    source, path = tiny(0), tmp_path / "old.safetensors"
    save_pi0_weights(source, path, layout="openpi")
    edit_file(path, rename("action_time_mlp_", "time_mlp_"))

    model = tiny(1)
    report = load_pi0_weights(model, path)

    assert_same(model, source)
    assert report.complete and report.layout == "openpi"


def test_older_transformers_names_in_bfloat16_load_cast(tmp_path: Path) -> None:
    source, path = tiny(0), tmp_path / "model.safetensors"
    save_pi0_weights(source, path, layout="lerobot")
    for old, new in [
        ("paligemma.model.language_model.", "paligemma.language_model.model."),
        ("paligemma.lm_head.", "paligemma.language_model.lm_head."),
        ("paligemma.model.vision_tower.", "paligemma.vision_tower."),
        ("paligemma.model.multi_modal_projector.", "paligemma.multi_modal_projector."),
    ]:
        edit_file(path, rename(old, new))
    edit_file(path, lambda tensors: {key: value.bfloat16() for key, value in tensors.items()})

    model = tiny(1)
    report = load_pi0_weights(model, path)

    assert report.complete and report.layout == "lerobot"
    expected = source.state_dict()
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, expected[name].bfloat16().float()), name


def test_native_layout_round_trips_and_reports_unknown_keys(tmp_path: Path) -> None:
    source, path = tiny(0), tmp_path / "model.safetensors"
    save_pi0_weights(source, path)
    edit_file(path, lambda tensors: {**tensors, "stray.weight": torch.ones(2)})

    model = tiny(1)
    report = load_pi0_weights(model, path)

    assert_same(model, source)
    assert (report.missing, report.unexpected, report.layout) == ((), ("stray.weight",), "native")
    assert not report.complete and "1 unexpected (stray.weight)" in report.summary()


def test_missing_tensors_are_reported_and_left_alone(tmp_path: Path) -> None:
    source, path = tiny(0), tmp_path / "model.safetensors"
    save_pi0_weights(source, path, layout="lerobot")
    edit_file(
        path, lambda tensors: {key: value for key, value in tensors.items() if "gemma_expert" not in key}
    )

    model = tiny(1)
    before = model.expert.norm.weight.detach().clone()
    report = load_pi0_weights(model, path)

    assert report.missing and all(name.startswith("expert.") for name in report.missing)
    assert torch.equal(model.expert.norm.weight, before)


def test_shape_mismatch_names_the_key_and_copies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_pi0_weights(tiny(0), path, layout="lerobot")
    edit_file(path, lambda tensors: {**tensors, "model.state_proj.weight": torch.zeros(5, 7)})
    model = tiny(1)
    before = {name: value.clone() for name, value in model.state_dict().items()}

    with pytest.raises(
        WeightShapeError, match=r"'model\.state_proj\.weight'.*\[5, 7\].*'state_proj\.weight'"
    ) as error:
        load_pi0_weights(model, path)

    assert (error.value.ckpt_key, error.value.key) == ("model.state_proj.weight", "state_proj.weight")
    assert error.value.shape == tuple(model.state_proj.weight.shape)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_two_keys_for_one_parameter_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_pi0_weights(tiny(0), path, layout="openpi")
    edit_file(
        path, lambda tensors: {**tensors, "time_mlp_in.bias": tensors["action_time_mlp_in.bias"].clone()}
    )

    with pytest.raises(WeightFileError, match="both fill"):
        load_pi0_weights(tiny(1), path)


def test_sharded_directory_loads_through_its_index(tmp_path: Path) -> None:
    source, whole = tiny(0), tmp_path / "whole.safetensors"
    save_pi0_weights(source, whole, layout="lerobot")
    tensors = load_file(str(whole))
    shards = tmp_path / "shards"
    shards.mkdir()
    weight_map: dict[str, str] = {}
    for number, keys in enumerate([sorted(tensors)[::2], sorted(tensors)[1::2]], start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file({key: tensors[key] for key in keys}, str(shards / name))
        weight_map.update(dict.fromkeys(keys, name))
    (shards / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )

    model = tiny(1)
    report = load_pi0_weights(model, shards)

    assert_same(model, source)
    assert report.complete and report.layout == "lerobot"

    (shards / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightFileError, match="model-00002-of-00002"):
        load_pi0_weights(tiny(1), shards)


def test_truncated_or_garbage_files_say_to_download_again(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_pi0_weights(tiny(0), path)
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match=r"model\.safetensors.*re-download or re-convert"):
        load_pi0_weights(tiny(1), path)

    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(WeightFileError, match="re-download"):
        load_pi0_weights(tiny(1), tmp_path)

    with pytest.raises(WeightFileError, match="no weights"):
        load_pi0_weights(tiny(1), tmp_path / "absent.safetensors")
    path.unlink()
    with pytest.raises(WeightFileError, match="neither"):
        load_pi0_weights(tiny(1), tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(WeightFileError, match="not a safetensors index"):
        load_pi0_weights(tiny(1), tmp_path)


def test_config_json_gives_pi0_config_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    lerobot = {
        "type": "pi0",
        "chunk_size": 50,
        "n_action_steps": 50,
        "max_state_dim": 32,
        "max_action_dim": 32,
    }
    path.write_text(json.dumps({**lerobot, "num_steps": 10}))
    overrides = load_config_json(tmp_path)
    assert overrides == {"action_dim": 32, "action_horizon": 50, "num_steps": 10}
    assert get_config("pi0", **overrides).action_horizon == 50

    path.write_text(json.dumps({**lerobot, "num_inference_steps": 5}))  # LeRobot's name for num_steps
    assert load_config_json(path)["num_steps"] == 5

    path.write_text(json.dumps({"action_dim": 24, "action_horizon": 16}))
    assert load_config_json(path) == {"action_dim": 24, "action_horizon": 16}

    path.write_text(json.dumps({**lerobot, "max_state_dim": 14}))
    with pytest.raises(ValueError, match="disagree"):
        load_config_json(path)


# ---- the peers' own modules load our exports strictly ------------------------------------------------
# Full size, on the `meta` device: names and shapes are checked, nothing is allocated.


@pytest.fixture(scope="module")
def lerobot_pi0() -> Iterator[torch.nn.Module]:
    """LeRobot 0.4.4's PI0Pytorch, the module `PI0Policy.model` holds (openpi's PyTorch π0, ported with
    openpi's names), at π0's size. Stand-ins keep out what π0's module does not need: the
    `lerobot.policies` and `lerobot.policies.pi0` package inits (they import every policy, and through
    them diffusers and torchvision), the hub-loading base class `lerobot.policies.pretrained` (it pulls
    LeRobot's robots and torchvision), and `transformers.models.siglip.check`, which only exists in the
    transformers branch LeRobot pins (it adds adaRMS norms, which π0 does not use); and, where
    torchvision cannot load beside this torch, a bare `torchvision` for LeRobot's dataset utilities,
    as tests/test_lerobot.py does."""
    for needed in ("lerobot", "transformers", "draccus"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed (scripts/install.sh installs it)")
    import lerobot

    root = Path(lerobot.__file__).parent
    stand_ins: dict[str, types.ModuleType] = {}
    for name in ("lerobot.policies", "lerobot.policies.pi0"):
        package = types.ModuleType(name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stand_ins[name] = package

    class PreTrainedPolicy(torch.nn.Module):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

    pretrained = types.ModuleType("lerobot.policies.pretrained")
    pretrained.PreTrainedPolicy = PreTrainedPolicy  # type: ignore[attr-defined]
    pretrained.T = typing.TypeVar("T")  # type: ignore[attr-defined]
    check = types.ModuleType("transformers.models.siglip.check")
    check.check_whether_transformers_replace_is_installed_correctly = lambda: True  # type: ignore[attr-defined]
    stand_ins |= {pretrained.__name__: pretrained, check.__name__: check}
    try:
        import torchvision  # noqa: F401
    except Exception:
        vision = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms")}
        for name, module in vision.items():
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        vision["torchvision"].transforms = vision["torchvision.transforms"]  # type: ignore[attr-defined]
        stand_ins |= vision
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        for name, module in stand_ins.items():
            patch.setitem(sys.modules, name, module)
        try:
            from lerobot.policies.pi0.configuration_pi0 import PI0Config
            from lerobot.policies.pi0.modeling_pi0 import PI0Pytorch
        except Exception as error:  # a dependency missing or not loadable here
            pytest.skip(f"LeRobot's π0 does not import here: {error!r}")
        with torch.device("meta"):
            yield PI0Pytorch(PI0Config(device="cpu"))
    for name in set(sys.modules) - before:  # our stand-ins are gone: so are the modules built on them
        if name.startswith("lerobot.policies"):
            del sys.modules[name]


def full_size_export(layout: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = Pi0(get_config("pi0"))
    return export_state_dict(model, layout)  # type: ignore[arg-type]


def test_lerobot_loads_the_lerobot_export_strictly(lerobot_pi0: torch.nn.Module) -> None:
    policy = torch.nn.Module()
    policy.model = lerobot_pi0  # PI0Policy's state_dict: its PI0Pytorch under `model.`
    exported = full_size_export("lerobot")
    assert LEROBOT + "gemma_expert.lm_head.weight" in exported
    policy.load_state_dict(exported, strict=True)  # raises on a missing, extra or misshapen key


def test_openpis_pi0_loads_the_openpi_export_strictly(lerobot_pi0: torch.nn.Module) -> None:
    lerobot_pi0.load_state_dict(full_size_export("openpi"), strict=True)


def test_the_openpi_export_has_openpis_pi0_names() -> None:
    """openpi's `pi0_pytorch.py` and its converter: π0's time MLP is `action_time_mlp_*` (π0.5's is
    `time_mlp_*`), and the action expert keeps an output head."""
    keys = set(full_size_export("openpi"))
    lerobot = set(full_size_export("lerobot"))
    expected = {
        "action_time_mlp_in.weight": (1024, 2048),
        "action_time_mlp_in.bias": (1024,),
        "action_time_mlp_out.weight": (1024, 1024),
        "action_time_mlp_out.bias": (1024,),
        "state_proj.weight": (1024, 32),
        "action_in_proj.weight": (1024, 32),
        "action_out_proj.weight": (32, 1024),
        OPENPI + "gemma_expert.lm_head.weight": (257_152, 1024),
        OPENPI + "gemma_expert.model.norm.weight": (1024,),
        OPENPI + "gemma_expert.model.layers.17.self_attn.k_proj.weight": (256, 1024),
        OPENPI + "paligemma.lm_head.weight": (257_152, 2048),
        OPENPI + "paligemma.model.language_model.embed_tokens.weight": (257_152, 2048),
        OPENPI + "paligemma.model.language_model.layers.0.mlp.gate_proj.weight": (16_384, 2048),
        OPENPI + "paligemma.model.multi_modal_projector.linear.weight": (2048, 1152),
        OPENPI + "paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight": (
            1152,
            3,
            14,
            14,
        ),
        OPENPI + "paligemma.model.vision_tower.vision_model.post_layernorm.bias": (1152,),
    }
    exported = full_size_export("openpi")
    assert {key: tuple(exported[key].shape) for key in expected} == expected
    assert not any(key.startswith(("time_mlp_", "model.")) for key in keys)
    assert not any("gemma_expert.model.embed_tokens" in key for key in keys)
    assert lerobot == {"model." + key for key in keys}  # LeRobot: the same names under `model.`
