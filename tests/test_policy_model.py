"""π0's mechanisms: the block attention mask, the prefix cache, and that flow matching can learn."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from policy.batch import Pi0Inputs
from policy.config import CONFIGS, get_config
from policy.gemma import grouped_attention
from policy.pi0 import Pi0, make_attention_mask, sample_flow_time


def inputs_for(config_name: str, batch: int = 2, seed: int = 0) -> Pi0Inputs:
    config = get_config(config_name)
    generator = torch.Generator().manual_seed(seed)
    size, length = config.vision.image_size, config.max_token_len
    return Pi0Inputs(
        images=torch.rand(batch, 3, 3, size, size, generator=generator) * 2 - 1,
        image_masks=torch.tensor([[True, True, False]] + [[True, True, True]] * (batch - 1)),
        tokens=torch.randint(3, config.vocab_size, (batch, length), generator=generator),
        token_masks=torch.arange(length)[None].expand(batch, -1) < torch.arange(4, 4 + batch)[:, None],
        state=torch.randn(batch, config.action_dim, generator=generator),
    )


def randomized(config_name: str, seed: int = 0) -> Pi0:
    """A model whose norms are not the identity, so the test would see a norm applied twice or not at all."""
    torch.manual_seed(seed)
    model = Pi0(get_config(config_name))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0, 0.2)
    return model.eval()


def test_the_attention_mask_follows_the_block_numbers() -> None:
    pad = torch.tensor([[True, True, False, True, True, True]])
    blocks = torch.tensor([[0, 0, 0, 1, 1, 0]])  # prefix of three (one padded), state, two actions
    mask = make_attention_mask(pad, blocks)[0].int()
    assert mask.tolist() == [
        [1, 1, 0, 0, 0, 0],  # prefix tokens see the prefix only
        [1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],  # padding sees nothing and is seen by nobody
        [1, 1, 0, 1, 0, 0],  # the state sees the prefix and itself
        [1, 1, 0, 1, 1, 1],  # actions see everything real and each other
        [1, 1, 0, 1, 1, 1],
    ]
    causal = make_attention_mask(torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.long))
    assert causal[0].int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_the_model_embeds_pi0s_token_layout() -> None:
    model = randomized("pi0-tiny")
    config = model.config
    inputs = inputs_for("pi0-tiny")
    prefix, pad, blocks = model.embed_prefix(inputs)
    per_camera = config.vision.tokens
    assert prefix.shape == (2, 3 * per_camera + config.max_token_len, config.language.width)
    assert not pad[0, 2 * per_camera : 3 * per_camera].any()  # the missing camera is masked
    assert pad[1, : 3 * per_camera].all() and int(pad[0, 3 * per_camera :].sum()) == 4
    assert not blocks.any()
    suffix, suffix_pad, suffix_blocks = model.embed_suffix(
        inputs.state, model.noise(2, "cpu"), torch.tensor([0.3, 0.9])
    )
    assert suffix.shape == (2, 1 + config.action_horizon, config.expert.width) and suffix_pad.all()
    assert suffix_blocks[0, :3].tolist() == [1, 1, 0]


def test_prefix_cache_inference_equals_uncached_inference() -> None:
    model = randomized("pi0-tiny")
    inputs = inputs_for("pi0-tiny")
    noise = model.noise(2, "cpu", torch.Generator().manual_seed(1))
    cached = model.sample_actions(inputs, noise)
    x, dt = noise.clone(), -1.0 / model.config.num_steps
    with torch.no_grad():
        for step in range(model.config.num_steps):
            x = x + dt * model.velocity(inputs, x, torch.full((2,), 1.0 + step * dt))
    assert torch.allclose(cached, x, atol=1e-5)
    assert not torch.allclose(cached, noise)


def test_the_prompt_and_every_camera_reach_the_actions_but_padding_does_not() -> None:
    model = randomized("pi0-tiny")
    inputs = inputs_for("pi0-tiny")
    noise = model.noise(2, "cpu", torch.Generator().manual_seed(1))
    reference = model.sample_actions(inputs, noise)

    def changed(**fields: torch.Tensor) -> bool:
        other = dataclasses.replace(inputs, **fields)
        return not torch.allclose(model.sample_actions(other, noise)[1], reference[1], atol=1e-6)

    images = inputs.images.clone()
    images[1, 2] = -images[1, 2]
    assert changed(images=images)
    tokens = inputs.tokens.clone()
    tokens[1, 0] = 3
    assert changed(tokens=tokens)
    padded = inputs.tokens.clone()
    padded[:, 10:] = 7  # beyond every sample's prompt
    assert not changed(tokens=padded)
    masked = inputs.images.clone()
    masked[0, 2] = 0.5  # sample 0's third camera is masked
    other = dataclasses.replace(inputs, images=masked)
    assert torch.allclose(model.sample_actions(other, noise)[0], reference[0], atol=1e-6)


def test_flow_times_lean_towards_noise() -> None:
    time = sample_flow_time(20_000, torch.Generator().manual_seed(0))
    assert float(time.min()) >= 0.001 and float(time.max()) <= 1.0
    assert float(time.mean()) == pytest.approx(0.001 + 0.999 * 0.6, abs=0.01)  # Beta(1.5, 1) has mean 0.6


def test_a_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = Pi0(get_config("pi0-tiny")).train()
    inputs = inputs_for("pi0-tiny", batch=4)
    actions = torch.randn(4, model.config.action_horizon, model.config.action_dim)
    noise = torch.randn_like(actions)
    time = torch.linspace(0.1, 0.9, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = model.flow_matching_loss(inputs, actions, noise, time).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_a_frozen_prefix_gets_no_gradient_and_gives_the_same_loss() -> None:
    model = randomized("pi0-tiny").train()
    inputs = inputs_for("pi0-tiny")
    actions, noise = torch.randn(2, 2, 10, 32).unbind(0)
    time = torch.tensor([0.2, 0.7])
    joint = model.flow_matching_loss(inputs, actions, noise, time)
    model.freeze_prefix()
    cached = model.flow_matching_loss(inputs, actions, noise, time)
    assert torch.allclose(joint, cached, atol=1e-5)
    cached.mean().backward()
    assert all(p.grad is None for p in model.prefix_parameters())
    assert model.action_out_proj.weight.grad is not None


def test_the_published_size_has_pi0s_parameter_count() -> None:
    with torch.device("meta"):
        model = Pi0(CONFIGS["pi0"])
    count = sum(p.numel() for p in model.parameters())
    assert 3.2e9 < count < 3.3e9  # PaliGemma 3B (SigLIP So400m + Gemma 2B) + a 300M action expert


def test_experts_that_cannot_share_attention_are_refused() -> None:
    config = get_config("pi0-tiny")
    with pytest.raises(ValueError, match="share one attention"):
        dataclasses.replace(config, expert=dataclasses.replace(config.expert, depth=3))


def test_every_weight_but_the_declared_unused_ones_reaches_the_loss() -> None:
    model = randomized("pi0-tiny").train()
    inputs = inputs_for("pi0-tiny")
    actions, noise = torch.randn(2, 2, 10, 32).unbind(0)
    model.flow_matching_loss(inputs, actions, noise, torch.tensor([0.2, 0.7])).mean().backward()
    unused = {id(p) for p in model.unused_parameters()}
    for name, parameter in model.named_parameters():
        assert (parameter.grad is None) == (id(parameter) in unused), name


def test_several_noise_draws_against_one_prefix_equal_as_many_joint_passes() -> None:
    model = randomized("pi0-tiny").train()
    inputs = inputs_for("pi0-tiny")
    draws = 3
    actions = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(2 * draws, 10, 32, generator=torch.Generator().manual_seed(5))
    time = torch.rand(2 * draws, generator=torch.Generator().manual_seed(6))
    shared = model(inputs, actions, noise, time)
    shared.sum().backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    separate = torch.cat(
        [
            model(inputs.select(slice(k // draws, k // draws + 1)), actions[k // draws : k // draws + 1],
                  noise[k : k + 1], time[k : k + 1])
            for k in range(2 * draws)
        ]
    )  # fmt: skip
    separate.sum().backward()
    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        if name in shared_grads:  # float32 rounding of sums of terms up to the gradient's largest entry
            atol = max(1e-5, 1e-6 * float(p.grad.abs().max()))
            torch.testing.assert_close(shared_grads[name], p.grad, atol=atol, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="k rows per sample"):
        model(inputs, actions, noise[:5], time[:5])


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 1), (4, 2), (2, 2)])
def test_grouped_attention_is_masked_gqa_without_enable_gqa(heads: int, kv_heads: int) -> None:
    """Folding each KV head's query heads into its query length gives masked GQA's values exactly, in
    a call SDPA's fused masked kernels accept (policy.gemma.grouped_attention)."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, 5, 16, generator=generator)
    k, v = (torch.randn(2, kv_heads, 7, 16, generator=generator) for _ in range(2))
    mask = torch.rand(2, 5, 7, generator=generator) > 0.3
    mask[..., 0] = True  # every query sees something
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=True)
    torch.testing.assert_close(grouped_attention(q, k, v, mask), reference, atol=1e-6, rtol=1e-5)


def test_cutting_unused_prompt_padding_changes_no_loss() -> None:
    """Training trims the prompt's padding columns (policy.batch); the model must not notice."""
    config = get_config("pi0-tiny")
    model = Pi0(config).eval()
    generator = torch.Generator().manual_seed(3)
    batch = 2
    size = config.vision.image_size
    tokens = torch.randint(1, config.vocab_size, (batch, config.max_token_len), generator=generator)
    token_masks = torch.zeros(batch, config.max_token_len, dtype=torch.bool)
    token_masks[0, :5], token_masks[1, :3] = True, True
    inputs = Pi0Inputs(
        images=torch.rand(batch, 1, 3, size, size, generator=generator) * 2 - 1,
        image_masks=torch.ones(batch, 1, dtype=torch.bool),
        tokens=tokens,
        token_masks=token_masks,
        state=torch.randn(batch, config.action_dim, generator=generator),
    )
    trimmed = inputs.without_trailing_padding()
    assert trimmed.tokens.shape[1] == 5
    actions = torch.randn(batch, config.action_horizon, config.action_dim, generator=generator)
    time = torch.full((batch,), 0.4)
    with torch.no_grad():
        full = model.velocity(inputs, actions, time)
        cut = model.velocity(trimmed, actions, time)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)
