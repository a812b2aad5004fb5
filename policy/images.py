"""Camera frames as π0 sees them: square, in [-1, 1], and (in training) openpi's augmentations.

Everything works on batched torch tensors, so augmentation runs wherever the batch is (on the
accelerator in training) with one random draw per image and no per-image Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BLACK = -1.0  # black in [-1, 1]: openpi pads and fills with 0 in uint8


def resize_with_pad(images: torch.Tensor, size: int, pad_value: float = BLACK) -> torch.Tensor:
    """(n, 3, h, w) -> (n, 3, size, size): scaled to fit (aspect ratio kept, bilinear), centred, the
    rest `pad_value`. As openpi's: the same rounding of the scaled size and the same split of the
    padding (the odd pixel goes to the bottom/right); antialiased when shrinking, as PIL is."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    ratio = max(width / size, height / size)
    new_height, new_width = int(height / ratio), int(width / ratio)
    resized = F.interpolate(
        images, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=ratio > 1
    )
    top, left = (size - new_height) // 2, (size - new_width) // 2
    pads = (left, size - new_width - left, top, size - new_height - top)
    return F.pad(resized, pads, value=pad_value)


@dataclass(frozen=True)
class Augmentation:
    """Training augmentations. Geometric ones (a random crop of `crop_scale` of each side, resized
    back, a shift of up to `max_shift` of the side, and a rotation) apply to the non-wrist cameras
    only: a wrist camera moves with the gripper, so where things are in its frame is the information.
    Colour jitter applies to all; each range is the ± spread of a factor around 1, and 0 turns that
    jitter off."""

    crop_scale: float = 0.95
    max_rotation_deg: float = 5.0
    max_shift: float = 0.0
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5

    @property
    def geometric(self) -> bool:
        return self.crop_scale != 1.0 or self.max_rotation_deg != 0.0 or self.max_shift != 0.0


OPENPI_AUGMENTATION = Augmentation()
# openpi's crop and rotation move a 160-pixel view of the twin's table by up to ~6 pixels, about the
# cube's size; these keep the geometry the grasp needs (compared in docs/learning.md).
AUGMENTATIONS: dict[str, Augmentation] = {
    "openpi": OPENPI_AUGMENTATION,
    "shift": Augmentation(crop_scale=1.0, max_rotation_deg=0.0, max_shift=0.02),
    "color": Augmentation(crop_scale=1.0, max_rotation_deg=0.0),
}


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform draws made on the generator's device (a CPU generator may drive a GPU batch)."""
    where = generator.device if generator is not None else device
    draw = torch.rand(shape, generator=generator, device=where)
    return (low + (high - low) * draw).to(device)


def _crop_and_rotate(
    images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """(n, 3, h, w): one affine resampling per image that crops at a random place, scales the crop
    back to full size and rotates it about the centre; what comes from outside the frame is black."""
    n, _, height, width = images.shape
    scale = augmentation.crop_scale
    angle = _uniform((n,), -1.0, 1.0, generator, images.device) * math.radians(augmentation.max_rotation_deg)
    reach = (1.0 - scale) + 2.0 * augmentation.max_shift  # grid_sample's coordinates span 2 per side
    shift = _uniform((n, 2), -reach, reach, generator, images.device)  # crop centre
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width  # a rotation in pixels, written in grid_sample's [-1, 1] coordinates
    theta = torch.stack(
        [
            torch.stack([scale * cos, -scale * sin * aspect, shift[:, 0]], dim=1),
            torch.stack([scale * sin / aspect, scale * cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # grid_sample fills with 0; shifting by one makes that fill black (-1).
    return (
        F.grid_sample(images - BLACK, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        + BLACK
    )


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, h, w) in [0, 1] -> (n, 1, h, w) luma (ITU-R 601, as torchvision and PIL)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return (images * weights[:, None, None]).sum(dim=1, keepdim=True)


def _color_jitter(
    images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """(n, 3, h, w) in [-1, 1]: brightness, contrast, saturation, each by its own random factor per
    image, computed in [0, 1] and clamped after each step as torchvision's ColorJitter does."""
    x = (images + 1.0) / 2.0
    n = x.shape[0]

    def factor(spread: float) -> torch.Tensor:
        draw = _uniform((n,), 1.0 - spread, 1.0 + spread, generator, x.device)
        return draw.to(x.dtype).view(n, 1, 1, 1)

    if augmentation.brightness:
        x = (x * factor(augmentation.brightness)).clamp(0.0, 1.0)
    if augmentation.contrast:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = torch.lerp(mean, x, factor(augmentation.contrast)).clamp(0.0, 1.0)
    if augmentation.saturation:
        x = torch.lerp(_gray(x), x, factor(augmentation.saturation)).clamp(0.0, 1.0)
    return x * 2.0 - 1.0


def augment_images(
    images: torch.Tensor,
    is_wrist: Sequence[bool],
    generator: torch.Generator | None = None,
    augmentation: Augmentation = OPENPI_AUGMENTATION,
) -> torch.Tensor:
    """(b, cameras, 3, h, w) in [-1, 1] -> the same, augmented; `is_wrist` says per camera slot."""
    batch, cameras = images.shape[:2]
    if len(is_wrist) != cameras:
        raise ValueError(f"is_wrist names {len(is_wrist)} cameras, the images have {cameras}")
    out = images.clone()
    fixed = [slot for slot, wrist in enumerate(is_wrist) if not wrist]
    if fixed and augmentation.geometric:
        chosen = images[:, fixed].flatten(0, 1)
        out[:, fixed] = _crop_and_rotate(chosen, augmentation, generator).unflatten(0, (batch, len(fixed)))
    jittered = _color_jitter(out.flatten(0, 1), augmentation, generator)
    return jittered.unflatten(0, (batch, cameras)).clamp(-1.0, 1.0)
