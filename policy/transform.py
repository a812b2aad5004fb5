"""What π0 sees of a camera, defined once for training and inference.

A camera frame reaches the model through `view_frame` (crop the view's region, scale it into the
vision tower's square, round to uint8) and `model_images` (uint8 → [-1, 1], channels first).
Training caches `view_frame`'s output per episode (policy.frame_cache) and inference calls it on
the live frame, so a model is never trained on one picture and run on another.

A view's crop is a region of the frame in fractions of its width and height, so it means the same
at any resolution the camera (or the twin) delivers. Cropping to where the task happens is how a
small model at a small resolution still sees a 4 cm cube: on the twin's top camera the whole range
of cube placements spans 48 × 48 of its 320 × 240 pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from policy.images import OPENPI_AUGMENTATION, Augmentation, resize_with_pad

Crop = tuple[float, float, float, float]  # left, top, right, bottom, as fractions of the frame
FULL_FRAME: Crop = (0.0, 0.0, 1.0, 1.0)


def _even(pixels: int) -> int:
    """`pixels` rounded up to an even count (at least 2)."""
    return max(2, pixels + pixels % 2)


@dataclass(frozen=True)
class CameraView:
    """One model image slot: a recorded camera and the region of its frame the model sees."""

    camera: str
    crop: Crop = FULL_FRAME

    def __post_init__(self) -> None:
        left, top, right, bottom = self.crop
        if not (0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0):
            raise ValueError(
                f"camera {self.camera}: crop {self.crop} is not (left, top, right, bottom) with "
                "0 <= left < right <= 1 and 0 <= top < bottom <= 1"
            )

    @property
    def is_wrist(self) -> bool:
        """A wrist camera moves with the gripper (openpi's test: the name), so geometric
        augmentations leave it alone."""
        return "wrist" in self.camera

    def pixels(self, height: int, width: int) -> tuple[slice, slice]:
        """The crop as row and column slices of a (height, width) frame."""
        left, top, right, bottom = self.crop
        rows = slice(round(top * height), max(round(top * height) + 1, round(bottom * height)))
        columns = slice(round(left * width), max(round(left * width) + 1, round(right * width)))
        return rows, columns

    def render_size(self, height: int, width: int, size: int) -> tuple[int, int]:
        """The smallest (height, width) at which this camera's crop still holds `size` pixels across,
        keeping the camera's aspect ratio: what a renderer needs to produce for this view alone.
        Both even, as H.264's 4:2:0 video needs (an odd width stopped `rig eval` recording)."""
        left, top, right, bottom = self.crop
        scale = min(1.0, size / max((right - left) * width, (bottom - top) * height))
        return _even(min(height, math.ceil(height * scale))), _even(min(width, math.ceil(width * scale)))

    def describe(self) -> str:
        if self.crop == FULL_FRAME:
            return self.camera
        return f"{self.camera}@" + ",".join(f"{v:g}" for v in self.crop)

    @classmethod
    def parse(cls, text: str) -> CameraView:
        """`cam_high` (the whole frame) or `cam_high@left,top,right,bottom` (fractions)."""
        camera, _, crop = text.strip().partition("@")
        if not crop:
            return cls(camera)
        try:
            values = tuple(float(v) for v in crop.split(","))
        except ValueError:
            raise ValueError(f"{text!r}: the crop is four numbers, e.g. cam_high@0.3,0.25,0.8,0.9") from None
        if len(values) != 4:
            raise ValueError(f"{text!r}: the crop is four numbers (left, top, right, bottom)")
        return cls(camera, (values[0], values[1], values[2], values[3]))

    def to_dict(self) -> dict[str, Any]:
        return {"camera": self.camera, "crop": list(self.crop)}

    @classmethod
    def from_value(cls, value: Any) -> CameraView:
        """From a checkpoint: a view's dict, or (older checkpoints) a bare camera name."""
        if isinstance(value, str):
            return cls(value)
        crop = tuple(float(v) for v in value.get("crop", FULL_FRAME))
        if len(crop) != 4:
            raise ValueError(f"a view's crop has four numbers, got {value!r}")
        return cls(str(value["camera"]), (crop[0], crop[1], crop[2], crop[3]))


def parse_views(text: str) -> tuple[CameraView, ...]:
    """A name of TWIN_VIEWS, or `cam_high@0.3,0.25,0.8,0.9,cam_left_wrist`: views separated by commas,
    a crop's four numbers belonging to the view before them."""
    if text.strip() in TWIN_VIEWS:
        return TWIN_VIEWS[text.strip()]
    views: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if views and _is_number(part) and "@" in views[-1]:
            views[-1] += "," + part
        else:
            views.append(part)
    return tuple(CameraView.parse(view) for view in views)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# What the model sees by default, chosen by measurement (docs/learning.md). On the twin's top camera
# (320 x 240) every cube placement of gym-aloha's range (x 0..0.2 m, y 0.4..0.6 m) lies in pixels
# 156..204 x 116..164. A 160-pixel view of the table scaled to 112 left that range 26 pixels wide, two
# 14-pixel patches: a ViT trained from scratch did not learn where the cube was (a probe regressing
# the reach pose from it stayed near the mean), and the policy reached for the average place. A
# 64-pixel view around the placements, scaled to 112, spreads them over six patches: the same probe
# then errs by 0.014 rad, and pi0-small succeeds in 60 % of scenes after 1000 steps.
TWIN_VIEWS: Mapping[str, tuple[CameraView, ...]] = MappingProxyType(
    {
        "transfer_cube": (CameraView("cam_high", (0.4625, 0.45, 0.6625, 0.716667)),),
        # Insertion has two objects on opposite sides: the peg's placements (pixels 167..211 x 118..161)
        # and the socket's (107..152 x 115..164) each get a 64-pixel view.
        "insertion": (
            CameraView("cam_high", (0.490625, 0.45, 0.690625, 0.716667)),
            CameraView("cam_high", (0.30625, 0.45, 0.50625, 0.716667)),
        ),
        # ALOHA's three cameras, whole: what a real rig records (openpi's and LeRobot's slot order).
        "aloha": tuple(CameraView(name) for name in ("cam_high", "cam_left_wrist", "cam_right_wrist")),
    }
)
DEFAULT_VIEWS = TWIN_VIEWS["transfer_cube"]
ALOHA_VIEWS = TWIN_VIEWS["aloha"]

# The vision tower's side each twin view was measured best at, trained from scratch: a 64-pixel view
# at 56 pixels (16 patches) succeeded as often as at 112 (64 patches; 8/10 against 12/20 at step 1000)
# at half the cost of a step, since the image tokens dominate the language model's prefix.
MEASURED_IMAGE_SIZES: Mapping[str, int] = MappingProxyType({"transfer_cube": 56, "insertion": 56})


def measured_image_size(views: tuple[CameraView, ...], config_size: int) -> int:
    """The vision tower's side for a model trained from scratch on `views`: the size measured for them
    when they are a twin preset's and it is smaller than the config's, else the config's own."""
    for name, size in MEASURED_IMAGE_SIZES.items():
        if TWIN_VIEWS[name] == views:
            return min(size, config_size)
    return config_size


@dataclass(frozen=True)
class DataConfig:
    """What the model sees and how training varies it; travels with every checkpoint."""

    views: tuple[CameraView, ...] = DEFAULT_VIEWS  # image slots in order
    augment: bool = True
    augmentation: Augmentation = field(default=OPENPI_AUGMENTATION)
    prompt: str | None = None  # used instead of each episode's task text
    # The share of training samples whose state is blanked (set to its mean). Demonstrations are
    # smooth, so the state mid-reach already says where the arm is heading and a model can lower
    # its loss by extrapolating it instead of looking (the "copycat" problem); at the first tick,
    # where only the picture tells where the object is, such a model guesses, and in closed loop its
    # own error then reads as the plan. Without the state for some samples it must learn to look.
    state_dropout: float = 0.0

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(view.camera for view in self.views)

    def is_wrist(self) -> tuple[bool, ...]:
        return tuple(view.is_wrist for view in self.views)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cameras": list(self.cameras),
            "views": [view.to_dict() for view in self.views],
            "augment": self.augment,
            "augmentation": dataclasses.asdict(self.augmentation),
            "prompt": self.prompt,
            "state_dropout": self.state_dropout,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        views = values.get("views", values.get("cameras", ()))
        augmentation = values.get("augmentation")
        return cls(
            views=tuple(CameraView.from_value(v) for v in views),
            augment=bool(values.get("augment", True)),
            augmentation=Augmentation(**augmentation) if augmentation else OPENPI_AUGMENTATION,
            prompt=values.get("prompt"),
            state_dropout=float(values.get("state_dropout", 0.0)),
        )


def view_frame(frame: np.ndarray, view: CameraView, size: int) -> np.ndarray:
    """(h, w, 3) uint8 camera frame -> (size, size, 3) uint8: the view's crop scaled to fit the square
    (aspect kept, antialiased when shrinking, black bars where it is not square)."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 image, got {frame.shape} {frame.dtype}")
    rows, columns = view.pixels(frame.shape[0], frame.shape[1])
    region = torch.from_numpy(np.ascontiguousarray(frame[rows, columns])).permute(2, 0, 1)[None].float()
    scaled = resize_with_pad(region, size, pad_value=0.0)[0]
    return scaled.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def model_images(viewed: torch.Tensor) -> torch.Tensor:
    """(..., size, size, 3) uint8 -> (..., 3, size, size) float32 in [-1, 1]."""
    return viewed.movedim(-1, -3).float() * (2.0 / 255.0) - 1.0


def view_images(
    frames: Mapping[str, np.ndarray], views: Sequence[CameraView], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Live frames by camera -> the model's (slots, 3, size, size) images and (slots,) mask; a camera
    missing from `frames` is a black, masked slot."""
    blank = np.zeros((size, size, 3), np.uint8)
    viewed = [view_frame(frames[v.camera], v, size) if v.camera in frames else blank for v in views]
    mask = torch.tensor([v.camera in frames for v in views])
    return model_images(torch.from_numpy(np.stack(viewed))), mask
