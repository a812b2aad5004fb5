"""The policy server's wire format: msgpack messages whose numpy arrays travel as raw buffers.

Never pickle: a request may come from anyone who can reach the socket, and unpickling runs code.
An array is a msgpack ext value (type `ARRAY_EXT`) holding `[dtype, shape, bytes]`, little-endian,
with a short dtype whitelist; decoding checks that the bytes fill the shape exactly and returns a
writable, contiguous copy (safe to hand to torch).

Messages (plain maps, one frame each; `id` pairs a reply with its request; any request may carry
`wait_s`, how long its client waits for the reply, after which the server drops it):
    {"kind": "info"}                      → {"kind": "info", "info": PolicyInfo.to_dict(), "server": {
                                             "version", "protocol", "max_message_bytes"}}
    {"kind": "infer", "id", "state", "images", "prompt", "guidance": None | {"actions", "frozen",
     "execute"}}                          → {"kind": "chunk", "id", "actions" (H, 14) float32, "infer_s"}
    {"kind": "ping"}                      → {"kind": "pong"}
    anything that fails                   → {"kind": "error", "id", "message"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

from policy.interface import Guidance, PolicyObservation
from rig.step import STATE_DIM

PROTOCOL = 1  # bumped on an incompatible change of the messages
ARRAY_EXT = 1
DTYPES = frozenset({"uint8", "int64", "float32", "float64", "bool"})
MAX_DIMS = 8


class WireError(ValueError):
    """Bytes or a message that do not follow the wire format; says what was wrong."""


def encode(obj: Any) -> bytes:
    """msgpack bytes of `obj`: maps, lists, str, bytes, numbers, None and numpy arrays/scalars."""
    try:
        return msgpack.packb(obj, default=_encode_numpy, use_bin_type=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise WireError(f"cannot encode {type(obj).__name__} for the wire: {error}") from error


def decode(data: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(data, ext_hook=_decode_ext, raw=False)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise WireError(f"not a msgpack message ({len(data)} bytes): {error}") from error


def _encode_numpy(value: Any) -> Any:
    if isinstance(value, np.generic) and value.dtype.name in DTYPES:
        return value.item()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{type(value).__name__} is not a wire type")
    if value.dtype.name not in DTYPES:
        raise WireError(f"cannot send a {value.dtype} array; allowed: {', '.join(sorted(DTYPES))}")
    little = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
    header = msgpack.packb([value.dtype.name, list(value.shape), little.tobytes()], use_bin_type=True)
    return msgpack.ExtType(ARRAY_EXT, header)


def _decode_ext(code: int, payload: bytes) -> np.ndarray:
    if code != ARRAY_EXT:
        raise WireError(f"unknown msgpack ext type {code}; only arrays ({ARRAY_EXT}) are sent")
    try:
        dtype_name, shape, raw = msgpack.unpackb(payload, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise WireError(f"an array whose header is not [dtype, shape, bytes]: {error}") from error
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise WireError(f"array dtype {dtype_name!r} is not allowed; allowed: {', '.join(sorted(DTYPES))}")
    valid_shape = isinstance(shape, list) and len(shape) <= MAX_DIMS
    if not valid_shape or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise WireError(f"array shape {shape!r} is not a list of at most {MAX_DIMS} sizes")
    if not isinstance(raw, bytes):
        raise WireError(f"array data is {type(raw).__name__}, not bytes")
    dtype = np.dtype(dtype_name)
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise WireError(f"a {dtype_name} array of shape {tuple(shape)} needs "
                        f"{math.prod(shape) * dtype.itemsize} bytes, got {len(raw)}")  # fmt: skip
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def infer_request(
    request_id: int, observation: PolicyObservation, guidance: Guidance | None
) -> dict[str, Any]:
    return {
        "kind": "infer",
        "id": request_id,
        "state": np.asarray(observation.state, np.float32),
        "images": {name: np.asarray(image, np.uint8) for name, image in observation.images.items()},
        "prompt": observation.prompt,
        "guidance": None
        if guidance is None
        else {
            "actions": np.asarray(guidance.actions, np.float32),
            "frozen": int(guidance.frozen),
            "execute": int(guidance.execute),
        },
    }


def read_infer_request(message: Mapping[str, Any]) -> tuple[PolicyObservation, Guidance | None]:
    """The observation and guidance of a decoded infer request, checked; WireError names the problem."""
    state = _array(message, "state", (STATE_DIM,))
    images = message.get("images")
    if not isinstance(images, dict):
        raise WireError(f"'images' must be a map of camera name to image, got {type(images).__name__}")
    for name, image in images.items():
        rgb = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
        if not rgb or image.dtype != np.uint8:
            raise WireError(f"image {name!r} must be an (h, w, 3) uint8 array, got {_describe(image)}")
    prompt = message.get("prompt")
    if not isinstance(prompt, str):
        raise WireError(f"'prompt' must be a string, got {type(prompt).__name__}")
    observation = PolicyObservation(state=state, images=images, prompt=prompt)
    guidance = message.get("guidance")
    if guidance is None:
        return observation, None
    if not isinstance(guidance, dict):
        raise WireError(f"'guidance' must be a map or nil, got {type(guidance).__name__}")
    actions = _array(guidance, "actions", (None, STATE_DIM))
    return observation, Guidance(actions, _count(guidance, "frozen"), _count(guidance, "execute"))


def chunk_actions(actions: Any) -> np.ndarray:
    """`actions` as a finite (H, 14) float32 array, or WireError: what the rig may execute."""
    if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.shape[1] != STATE_DIM:
        raise WireError(f"a chunk must be an (H, {STATE_DIM}) array, got {_describe(actions)}")
    if actions.dtype.kind != "f" or not np.isfinite(actions).all():
        raise WireError(f"a chunk must hold finite floats; got {_describe(actions)} with NaN or inf")
    return actions.astype(np.float32)


def _count(message: Mapping[str, Any], key: str) -> int:
    value: Any = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WireError(f"guidance {key!r} must be a count of steps, got {value!r}")
    return value


def _array(message: Mapping[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    value: Any = message.get(key)
    fits = isinstance(value, np.ndarray) and value.ndim == len(shape)
    if not fits or not all(want in (None, got) for want, got in zip(shape, value.shape, strict=True)):
        wanted = ", ".join("n" if n is None else str(n) for n in shape)
        raise WireError(f"{key!r} must be a ({wanted}) array, got {_describe(value)}")
    if value.dtype.kind not in "fiu":
        raise WireError(f"{key!r} must be numeric, got {value.dtype}")
    return value.astype(np.float32)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__
