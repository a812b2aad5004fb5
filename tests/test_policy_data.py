"""π0's data pipeline: tokenizers, normalization, images and augmentation, the store -> batches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import torch
from synthetic_store import CAMERAS, write_synthetic_store

from policy.batch import TrainingBatch
from policy.config import get_config
from policy.data import Pi0Dataset, augment_batch, batches, collate, make_loader
from policy.frame_cache import cache_path, cached_frames
from policy.images import AUGMENTATIONS, Augmentation, augment_images, resize_with_pad
from policy.normalize import (
    Normalizer,
    compute_norm_stats,
    load_openpi_norm_stats,
)
from policy.tokenizer import ByteTokenizer, PaligemmaTokenizer, clean_prompt, make_tokenizer
from policy.transform import (
    ALOHA_VIEWS,
    TWIN_VIEWS,
    CameraView,
    DataConfig,
    measured_image_size,
    model_images,
    parse_views,
    view_frame,
)
from recorder.steps import read_steps
from recorder.store import Store
from recorder.video import VideoReader, VideoWriter

CONFIG = get_config("pi0-tiny")
THREE = DataConfig(views=ALOHA_VIEWS)  # the synthetic store's three cameras, whole frames
STEPS = 30  # per episode
NO_JITTER = Augmentation(brightness=0.0, contrast=0.0, saturation=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two episodes with all three cameras, then one without the right wrist camera."""
    root = write_synthetic_store(tmp_path_factory.mktemp("store"), episodes=2, steps=STEPS)
    return write_synthetic_store(root, episodes=1, steps=STEPS, cameras=CAMERAS[:2], task="fold_the\ntowel")


@pytest.fixture(scope="module")
def normalizer(store: Path) -> Normalizer:
    return compute_norm_stats(store)


def all_steps(root: Path) -> dict[str, np.ndarray]:
    """Every episode's qpos and action, concatenated."""
    with Store(root, lock=False) as opened:
        steps = [read_steps(opened.episode_dir(e.id)) for e in opened.catalogue.episodes()]
    return {field: np.concatenate([s[field] for s in steps]) for field in ("qpos", "action")}


# ---- tokenizers -----------------------------------------------------------------------------------


def test_byte_tokens_are_bos_the_cleaned_bytes_and_a_newline_then_padding() -> None:
    tokenizer = ByteTokenizer(max_len=24)
    tokens, mask = tokenizer.encode("  pick_up\nthe cube ")
    text = "pick up the cube\n"
    assert tokens.dtype == np.int64 and mask.dtype == np.bool_ and tokens.shape == mask.shape == (24,)
    assert tokens[0] == ByteTokenizer.BOS and mask.sum() == 1 + len(text)
    assert tokenizer.decode(tokens[mask]) == text
    assert not tokens[~mask].any() and mask[: 1 + len(text)].all()
    long_tokens, long_mask = tokenizer.encode("x" * 100)
    assert long_mask.all() and tokenizer.decode(long_tokens) == "x" * 23  # cut, newline included


def test_paligemma_tokenizer_reads_a_sentencepiece_model(tmp_path: Path) -> None:
    sentences = ["transfer the cube", "pick up the cube", "put the cube in the box", "fold the towel"] * 4
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path / "paligemma_tokenizer.model"
    path.write_bytes(model.getvalue())
    reference = sentencepiece.SentencePieceProcessor(model_file=str(path))
    tokens, mask = PaligemmaTokenizer(path, max_len=32).encode("put_the cube\n")
    expected = reference.encode("put the cube", add_bos=True) + reference.encode("\n")
    assert tokens[mask].tolist() == expected and tokens[0] == reference.bos_id()
    assert not tokens[~mask].any() and reference.decode(tokens[mask].tolist()) == "put the cube"
    full = make_tokenizer(get_config("pi0"), path)
    assert isinstance(full, PaligemmaTokenizer) and full.max_len == get_config("pi0").max_token_len


def test_tokenizer_errors_say_what_file_is_needed(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.model"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.model.*paligemma_tokenizer\.model"):
        PaligemmaTokenizer(missing, 48)
    with pytest.raises(ValueError, match=r"pass --tokenizer PATH to paligemma_tokenizer\.model"):
        make_tokenizer(get_config("pi0"), None)
    with pytest.raises(ValueError, match="vocab_size"):
        make_tokenizer(get_config("pi0-tiny", vocab_size=100))
    assert isinstance(make_tokenizer(CONFIG), ByteTokenizer)
    assert clean_prompt(" a_b\nc ") == "a b c"


# ---- normalization --------------------------------------------------------------------------------


def test_norm_stats_of_a_store_are_those_of_its_steps(store: Path, normalizer: Normalizer) -> None:
    steps = all_steps(store)
    assert len(steps["qpos"]) == 3 * STEPS
    for stats, field in ((normalizer.state, "qpos"), (normalizer.actions, "action")):
        assert stats.dim == 14 and stats.mean.dtype == np.float32
        np.testing.assert_allclose(
            stats.mean, steps[field].astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(stats.std, steps[field].astype(np.float64).std(axis=0), rtol=1e-5)
        assert stats.q01 is not None and stats.q99 is not None and (stats.q01 < stats.q99).all()
    assert len(set(np.round(normalizer.state.std, 4))) > 5  # dimensions really differ
    only_first = compute_norm_stats(store, episodes=[1])
    np.testing.assert_allclose(
        only_first.state.mean, steps["qpos"][:STEPS].mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_normalizer_round_trips_on_numpy_and_torch(normalizer: Normalizer) -> None:
    actions = np.random.default_rng(0).normal(size=(5, 14)).astype(np.float32)
    z = normalizer.normalize_actions(actions)
    expected = (actions - normalizer.actions.mean) / (normalizer.actions.std + 1e-6)
    np.testing.assert_allclose(z, expected, rtol=1e-6)
    as_torch = normalizer.normalize_actions(torch.from_numpy(actions))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), z, rtol=1e-6)
    np.testing.assert_allclose(normalizer.unnormalize_actions(z), actions, rtol=1e-5, atol=1e-6)
    restored = Normalizer.from_dict(json.loads(json.dumps(normalizer.to_dict())))
    np.testing.assert_array_equal(restored.state.q99, normalizer.state.q99)
    with pytest.raises(ValueError, match="state has 32 dimensions"):
        normalizer.normalize_state(np.zeros(32, np.float32))


def test_openpi_norm_stats_are_cut_to_the_robot(tmp_path: Path) -> None:
    padded = {name: [float(i) + k for i in range(32)] for k, name in enumerate(("mean", "std", "q01", "q99"))}
    path = tmp_path / "norm_stats.json"
    path.write_text(
        json.dumps({"norm_stats": {"state": padded, "actions": {"mean": [0.5] * 32, "std": [2.0] * 32}}})
    )
    loaded = load_openpi_norm_stats(path)
    assert loaded.state.dim == loaded.actions.dim == 14
    np.testing.assert_array_equal(loaded.state.q99, np.arange(14) + 3.0)
    assert loaded.actions.q01 is None
    np.testing.assert_allclose(loaded.unnormalize_actions(np.zeros(14)), 0.5)
    path.write_text(json.dumps({"norm_stats": {"state": padded, "actions": {"std": [1.0] * 32}}}))
    with pytest.raises(ValueError, match="actions: missing key 'mean'"):
        load_openpi_norm_stats(path)
    path.write_text(json.dumps({"state": padded}))
    with pytest.raises(ValueError, match="missing key 'norm_stats'"):
        load_openpi_norm_stats(path)


# ---- images -----------------------------------------------------------------------------------------


def test_resize_with_pad_keeps_the_aspect_ratio_and_pads_black() -> None:
    images = torch.full((2, 3, 48, 64), 0.25)
    out = resize_with_pad(images, 32)
    assert out.shape == (2, 3, 32, 32)
    assert (out[:, :, :4] == -1).all() and (out[:, :, 28:] == -1).all()  # 48x64 -> 24x32 centred
    torch.testing.assert_close(out[:, :, 4:28], torch.full((2, 3, 24, 32), 0.25))
    tall = resize_with_pad(torch.zeros(1, 3, 64, 32), 32)
    assert (tall[..., :8] == -1).all() and (tall[..., 24:] == -1).all() and (tall[..., 8:24] == 0).all()


def test_a_view_crops_its_region_scales_it_into_the_square_and_maps_to_minus_one_one() -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 0] = 255
    frame[12:36, 32:56] = (0, 255, 0)  # a green block: the region the view below picks
    whole = view_frame(frame, CameraView("cam"), 32)
    assert whole.dtype == np.uint8 and whole.shape == (32, 32, 3)
    assert (whole[:4] == 0).all() and (whole[28:] == 0).all()  # 48x64 -> 24x32, black bars
    block = view_frame(frame, CameraView("cam", (0.5, 0.25, 0.875, 0.75)), 32)
    assert (block[..., 1] == 255).all() and (block[..., 0] == 0).all()  # the crop fills the square
    images = model_images(torch.from_numpy(np.stack([whole, block])))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert images[0, 0, 8:24, :12].eq(1.0).all() and images[0, 0, :4].eq(-1.0).all()


def test_views_parse_from_the_command_line_and_refuse_a_crop_outside_the_frame() -> None:
    views = parse_views("cam_high@0.25,0.2,0.75,0.9,cam_left_wrist")
    assert views == (CameraView("cam_high", (0.25, 0.2, 0.75, 0.9)), CameraView("cam_left_wrist"))
    assert [v.is_wrist for v in views] == [False, True]
    assert CameraView.parse(views[0].describe()) == views[0]
    with pytest.raises(ValueError, match="crop"):
        CameraView("cam_high", (0.5, 0.0, 0.4, 1.0))
    with pytest.raises(ValueError, match="four numbers"):
        parse_views("cam_high@0.1,0.2")
    assert CameraView("cam_high", (0.25, 0.0, 0.75, 0.5)).render_size(240, 320, 112) == (168, 224)
    restored = DataConfig.from_dict(json.loads(json.dumps(THREE.to_dict())))
    assert restored == THREE
    assert DataConfig.from_dict({"cameras": ["a", "b"], "augment": False, "prompt": None}).cameras == (
        "a",
        "b",
    )


def test_augmentation_keeps_shape_and_range_and_follows_the_seed() -> None:
    images = torch.rand(4, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    wrist = (False, True, True)
    first = augment_images(images, wrist, torch.Generator().manual_seed(7))
    again = augment_images(images, wrist, torch.Generator().manual_seed(7))
    other = augment_images(images, wrist, torch.Generator().manual_seed(8))
    assert first.shape == images.shape and first.min() >= -1 and first.max() <= 1
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other) and not torch.allclose(first, images)
    per_image = (first - images).abs().mean(dim=(2, 3, 4))
    assert (per_image > 1e-3).all()  # every image got its own jitter


def test_augmentation_moves_only_the_non_wrist_cameras() -> None:
    images = torch.rand(3, 3, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    out = augment_images(images, (False, True, True), torch.Generator().manual_seed(3), NO_JITTER)
    torch.testing.assert_close(out[:, 1:], images[:, 1:], rtol=0, atol=0)
    assert (out[:, 0] - images[:, 0]).abs().mean() > 0.05
    identity = Augmentation(crop_scale=1.0, max_rotation_deg=0.0, brightness=0, contrast=0, saturation=0)
    torch.testing.assert_close(augment_images(images, (False,) * 3, None, identity), images)
    black = torch.full((8, 1, 3, 32, 32), -1.0)
    assert (augment_images(black, (False,), torch.Generator().manual_seed(4)) == -1).all()  # fill is black


# ---- dataset and loader ---------------------------------------------------------------------------


def make_dataset(store: Path, normalizer: Normalizer, data: DataConfig = THREE) -> Pi0Dataset:
    return Pi0Dataset(store, CONFIG, data, normalizer, make_tokenizer(CONFIG))


def test_a_sample_holds_slots_tokens_and_normalized_padded_vectors(
    store: Path, normalizer: Normalizer
) -> None:
    dataset = make_dataset(store, normalizer)
    assert len(dataset) == 3 * STEPS
    steps = all_steps(store)
    sample = dataset[STEPS - 1]  # the first episode's last step
    size, horizon = CONFIG.vision.image_size, CONFIG.action_horizon
    assert sample["images"].shape == (3, 3, size, size) and sample["images"].dtype == torch.float32
    assert sample["image_masks"].tolist() == [True, True, True]
    red, green, blue = (sample["images"][slot, :, 8:24].mean(dim=(1, 2)) for slot in range(3))
    assert red.argmax() == 0 and green.argmax() == 1 and blue.argmax() == 2  # slots in DataConfig order
    expected_state = (steps["qpos"][STEPS - 1] - normalizer.state.mean) / (normalizer.state.std + 1e-6)
    np.testing.assert_allclose(sample["state"][:14].numpy(), expected_state, rtol=1e-5, atol=1e-5)
    assert sample["state"].shape == (CONFIG.action_dim,) and not sample["state"][14:].any()
    assert sample["actions"].shape == (horizon, CONFIG.action_dim) and not sample["actions"][:, 14:].any()
    assert sample["action_is_pad"].tolist() == [False] + [True] * (horizon - 1)
    assert (
        ByteTokenizer(CONFIG.max_token_len).decode(sample["tokens"][sample["token_masks"]].tolist())
        == "transfer the cu"
    )

    lacking = dataset[len(dataset) - 1]  # the episode recorded without the right wrist camera
    assert lacking["image_masks"].tolist() == [True, True, False]
    assert (lacking["images"][2] == -1).all()
    assert ByteTokenizer(16).decode(lacking["tokens"][lacking["token_masks"]].tolist()) == "fold the towel\n"
    told = make_dataset(store, normalizer, DataConfig(views=ALOHA_VIEWS, prompt="wave"))[0]
    assert ByteTokenizer(16).decode(told["tokens"][told["token_masks"]].tolist()) == "wave\n"

    batch = collate([sample, lacking])
    assert isinstance(batch, TrainingBatch) and batch.inputs.batch_size == 2
    assert batch.action_dim_mask.tolist() == [True] * 14 + [False] * (CONFIG.action_dim - 14)
    assert batch.inputs.image_masks.tolist() == [[True, True, True], [True, True, False]]
    augmented = augment_batch(batch, THREE, torch.Generator().manual_seed(0))
    assert augmented.inputs.images.shape == batch.inputs.images.shape
    assert augmented.actions is batch.actions and augment_batch(batch, DataConfig(augment=False)) is batch


def test_loader_batches_and_shards_across_ranks(store: Path, normalizer: Normalizer) -> None:
    tokenizer = make_tokenizer(CONFIG)

    def loader(rank: int, workers: int = 0) -> torch.utils.data.DataLoader:
        return make_loader(
            store,
            CONFIG,
            THREE,
            normalizer,
            tokenizer,
            4,
            workers=workers,
            seed=5,
            rank=rank,
            world_size=2,
        )

    shards = [list(loader(rank).sampler) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3 * STEPS // 2 and not set(shards[0]) & set(shards[1])
    stream = batches(loader(0))
    first = next(stream)
    inputs = first.inputs
    assert inputs.images.shape == (4, 3, 3, CONFIG.vision.image_size, CONFIG.vision.image_size)
    assert inputs.tokens.shape == inputs.token_masks.shape == (4, CONFIG.max_token_len)
    assert inputs.tokens.dtype == torch.int64 and inputs.state.shape == (4, CONFIG.action_dim)
    assert first.actions.shape == (4, CONFIG.action_horizon, CONFIG.action_dim)
    assert first.action_is_pad.shape == (4, CONFIG.action_horizon) and first.action_dim_mask.sum() == 14
    epoch = [first, *(next(stream) for _ in range(len(shards[0]) // 4 - 1))]
    following = next(stream)  # the next epoch, reshuffled
    assert not torch.equal(following.inputs.state, first.inputs.state)
    in_workers = next(iter(loader(0, workers=1)))  # a worker opens its own reader
    torch.testing.assert_close(in_workers.inputs.images, first.inputs.images)
    torch.testing.assert_close(in_workers.actions, first.actions)
    assert len(epoch) == 3 * STEPS // 2 // 4
    with pytest.raises(ValueError, match="not one batch of 64"):
        make_loader(store, CONFIG, THREE, normalizer, tokenizer, 64, world_size=2)


def test_frames_are_decoded_once_into_a_cache_that_follows_its_video(store: Path) -> None:
    with Store(store, lock=False) as opened:
        folder = opened.episode_dir(opened.catalogue.episodes()[0].id)
    view, built = CameraView("cam_high", (0.25, 0.25, 0.75, 0.75)), []
    frames = cached_frames(store, folder, view, 16, on_build=built.append)
    assert frames.shape == (STEPS, 16, 16, 3) and frames.dtype == np.uint8 and len(built) == 1
    from recorder.video import VideoReader

    with VideoReader(folder / "cam_high.mp4") as video:
        np.testing.assert_array_equal(frames[7], view_frame(video.frame(7), view, 16))
    again = cached_frames(store, folder, view, 16, on_build=built.append)
    assert len(built) == 1 and isinstance(again, np.memmap)  # found fresh: mapped, not decoded
    (folder / "cam_high.mp4").touch()  # the video changed (an import, a re-encode): decoded again
    cached_frames(store, folder, view, 16, on_build=built.append)
    assert len(built) == 2
    assert cache_path(store, folder, view, 16) != cache_path(store, folder, CameraView("cam_high"), 16)


def test_augmentation_presets_differ_only_in_what_they_move() -> None:
    assert not AUGMENTATIONS["color"].geometric and AUGMENTATIONS["shift"].geometric
    images = torch.zeros(2, 1, 3, 50, 50)
    images[:, :, :, 20:30, 20:30] = 1.0  # a bright square in the middle
    no_colour = Augmentation(
        crop_scale=1.0, max_rotation_deg=0.0, max_shift=0.1, brightness=0, contrast=0, saturation=0
    )
    shifted = augment_images(images, (False,), torch.Generator().manual_seed(1), no_colour)
    rows = (shifted[0, 0, 0] > 0.5).nonzero()[:, 0].float().mean()
    assert abs(float(rows) - 24.5) <= 5.5 and not torch.equal(shifted, images)  # moved, by at most 5 px


def test_a_twin_preset_trains_at_its_measured_image_size_and_nothing_else_changes() -> None:
    assert measured_image_size(TWIN_VIEWS["transfer_cube"], 112) == 56
    assert measured_image_size(TWIN_VIEWS["insertion"], 112) == 56
    assert measured_image_size(TWIN_VIEWS["aloha"], 112) == 112  # whole frames: the config's
    assert measured_image_size(TWIN_VIEWS["transfer_cube"], 32) == 32  # never above the config's


def test_a_view_renders_at_a_size_the_video_encoder_takes(tmp_path: Path) -> None:
    """A crop whose exact render size is odd (267 px wide here) is rounded up to even: libx264's
    4:2:0 refused the odd width and `rig eval` stopped at its first episode."""
    height, width = CameraView("cam_high", (0.40, 0.40, 0.6625, 0.75)).render_size(240, 320, 70)
    assert height % 2 == 0 and width % 2 == 0
    assert (0.6625 - 0.40) * width >= 70 and (0.75 - 0.40) * height >= 70  # the crop still holds 70 px
    with VideoWriter(tmp_path / "view.mp4", width, height, 10.0) as writer:
        writer.write(np.zeros((height, width, 3), np.uint8))
    with VideoReader(tmp_path / "view.mp4") as reader:
        assert reader.frame(0).shape == (height, width, 3)
    with pytest.raises(ValueError, match="even width and height, got 267x196"):
        VideoWriter(tmp_path / "odd.mp4", 267, 196, 10.0)  # said plainly, before libx264 refuses it
