"""The vision encoder: a SigLIP-style ViT (So400m/14 in the published π0), no pooling head.

Every camera image becomes (image_size / patch_size)² tokens. The patch and position embeddings run
in fp32 even under bf16 autocast, as openpi keeps them: they see raw pixels and small errors there
reach every token.

Axis names in the shape comments: n images (the batch's samples times their cameras), t patch
tokens, d width, f the MLP's hidden width, H × W pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policy.config import VisionConfig

LAYER_NORM_EPS = 1e-6


def sincos_positions(side: int, width: int) -> torch.Tensor:
    """(side², width) 2-D sine-cosine embeddings of a side × side patch grid (MAE's fixed ones): half
    the channels encode the row, half the column, at geometrically spaced frequencies."""
    quarter = width // 4
    frequencies = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    rows, columns = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    parts = []
    for coordinate in (rows, columns):
        angles = coordinate.reshape(-1, 1).double() * frequencies[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    table = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(table, (0, width - table.shape[1])).float()


class VisionEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        self.position_embedding = nn.Embedding(config.tokens, config.width)
        # Trained from scratch, learned positions start as random vectors, and a patch the cube never
        # crossed in the demonstrations says nothing about where it is. Starting from a smooth 2-D
        # code lets nearby patches mean nearby places from the first step (published weights, when
        # loaded, replace it).
        with torch.no_grad():
            side = config.image_size // config.patch_size
            self.position_embedding.weight.copy_(sincos_positions(side, config.width))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] → (n, t, d), in fp32."""
        with torch.autocast(pixels.device.type, enabled=False):
            weight = self.patch_embedding.weight
            patches = F.conv2d(
                pixels.to(weight.dtype), weight, self.patch_embedding.bias, stride=self.patch_embedding.stride
            )
            tokens = patches.flatten(2).transpose(1, 2)
            return tokens + self.position_embedding.weight.to(tokens.dtype)


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.q_proj = nn.Linear(config.width, config.width)
        self.k_proj = nn.Linear(config.width, config.width)
        self.v_proj = nn.Linear(config.width, config.width)
        self.out_proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, t, d) → (n, t, d): every patch attends to every patch of its image."""
        n, tokens, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        )
        return self.out_proj(attended.transpose(1, 2).reshape(n, tokens, width))


class VisionMlp(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, t, d) → (n, t, d), through (n, t, f)."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionLayer(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.self_attn = VisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = VisionMlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, t, d) → (n, t, d)."""
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(config) for _ in range(config.depth))


class SiglipVision(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(config)
        self.encoder = VisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] → (n, t, d)."""
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)
