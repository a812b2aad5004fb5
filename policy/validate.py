"""What a policy accepts, checked before it runs: an observation and guidance that fit the policy's
cameras, image sizes and horizon. A request that does not fails here with a sentence naming what is
wrong, instead of deep inside torch (or worse, after minutes of queueing behind other requests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from policy.interface import Guidance, PolicyInfo, PolicyObservation
from rig.step import STATE_DIM

MIN_IMAGE_SIDE = 16  # pixels; smaller is no camera frame (and scales to nothing)
MAX_IMAGE_SIDE = 4096
MAX_ASPECT = 4.0  # long side / short side; real cameras are 4:3 or 16:9


class ObservationError(ValueError):
    """An observation or guidance the policy cannot use; the message says what to change."""


def check_request(observation: PolicyObservation, guidance: Guidance | None, info: PolicyInfo) -> None:
    """Raise ObservationError unless `observation` (and `guidance`) fit the policy described by `info`."""
    check_state(observation.state)
    check_images(observation.images, info.cameras)
    if guidance is not None:
        check_guidance(guidance, info.action_horizon)


def check_state(state: np.ndarray) -> None:
    array = np.asarray(state)
    if array.shape != (STATE_DIM,):
        raise ObservationError(f"the state must be {STATE_DIM} joint values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ObservationError("the state holds NaN or inf: a joint reading is broken")


def check_images(images: Mapping[str, np.ndarray], cameras: Sequence[str]) -> None:
    unknown = sorted(set(images) - set(cameras))
    if unknown:
        raise ObservationError(
            f"unknown camera(s) {', '.join(map(repr, unknown))}; this policy reads {', '.join(cameras)}"
        )
    if not images:
        raise ObservationError(f"no images: this policy reads {', '.join(cameras)} (send at least one)")
    for name, image in images.items():
        _check_image(name, image)


def _check_image(name: str, image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ObservationError(f"image {name!r} must be an (h, w, 3) uint8 array, got {got}")
    height, width = image.shape[:2]
    short, long = sorted((height, width))
    if short < MIN_IMAGE_SIDE or long > MAX_IMAGE_SIDE or long > MAX_ASPECT * short:
        raise ObservationError(
            f"image {name!r} is {width}x{height}: each side must be {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} "
            f"pixels and the long side at most {MAX_ASPECT:g} times the short one"
        )


def check_guidance(guidance: Guidance, horizon: int) -> None:
    actions = np.asarray(guidance.actions)
    if actions.ndim != 2 or actions.shape[1] != STATE_DIM or not 1 <= len(actions) <= horizon:
        raise ObservationError(
            f"guidance actions must be (k, {STATE_DIM}) with 1 <= k <= {horizon} (the horizon), "
            f"got shape {actions.shape}"
        )
    if not np.isfinite(actions).all():
        raise ObservationError("guidance actions hold NaN or inf")
    frozen, execute = guidance.frozen, guidance.execute
    if frozen < 0 or execute < 1 or frozen + execute > horizon:
        raise ObservationError(
            f"guidance frozen={frozen}, execute={execute}: need frozen >= 0, execute >= 1 and "
            f"frozen + execute <= {horizon} (the horizon)"
        )
