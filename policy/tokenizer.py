"""Prompt tokenizers: a task's text to the fixed-length token row π0's prefix reads.

Two kinds, picked by `Pi0Config.tokenizer`: the published π0 reads PaliGemma's SentencePiece
vocabulary (a file the user supplies; nothing is ever downloaded), and the small sizes read raw
UTF-8 bytes, which need no file at all. Both follow openpi's layout: BOS, the cleaned prompt, then
a newline token (PaliGemma's prompt format ends with one), truncated and padded to `max_len`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from policy.config import Pi0Config

PALIGEMMA_FILE = "paligemma_tokenizer.model"


def clean_prompt(text: str) -> str:
    """openpi's cleaning: task names like `pick_cube` read as words, and a prompt is one line."""
    return text.strip().replace("_", " ").replace("\n", " ")


class Tokenizer(Protocol):
    max_len: int

    def encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int64 (max_len,), mask bool (max_len,) True on real tokens)."""
        ...


def pad_tokens(tokens: Sequence[int], max_len: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut to max_len (openpi truncates a long prompt rather than failing) and pad with `pad_id`."""
    kept = list(tokens)[:max_len]
    ids = np.full(max_len, pad_id, np.int64)
    ids[: len(kept)] = kept
    mask = np.arange(max_len) < len(kept)
    return ids, mask


class ByteTokenizer:
    """UTF-8 bytes shifted past three special tokens: a 259-token vocabulary that needs no file."""

    PAD, BOS, EOS = 0, 1, 2
    OFFSET = 3
    VOCAB_SIZE = 256 + OFFSET

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len

    def encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        body = [byte + self.OFFSET for byte in f"{clean_prompt(prompt)}\n".encode()]
        return pad_tokens([self.BOS, *body], self.max_len, self.PAD)

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        """The text of the byte tokens (special tokens skipped), for reading a batch back."""
        data = bytes(int(t) - self.OFFSET for t in tokens if int(t) >= self.OFFSET)
        return data.decode(errors="replace")


class PaligemmaTokenizer:
    """PaliGemma's SentencePiece model, read from a file the user names (openpi's
    `paligemma_tokenizer.model`)."""

    def __init__(self, model_path: Path, max_len: int) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no tokenizer file here. π0 needs PaliGemma's SentencePiece model, the file "
                f"openpi calls {PALIGEMMA_FILE}; pass its path with --tokenizer"
            )
        import sentencepiece  # lazily: only the full-size π0 needs it

        self.path = path
        self.max_len = max_len
        self._model: Any = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self._newline: list[int] = self._model.encode("\n")

    def encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._model.encode(clean_prompt(prompt), add_bos=True) + self._newline
        return pad_tokens(tokens, self.max_len)


def make_tokenizer(config: Pi0Config, model_path: Path | None = None) -> Tokenizer:
    """The tokenizer a config was trained with; the PaliGemma one needs its model file."""
    if config.tokenizer == "bytes":
        if config.vocab_size < ByteTokenizer.VOCAB_SIZE:
            raise ValueError(
                f"π0 config {config.name}: the byte tokenizer needs vocab_size >= "
                f"{ByteTokenizer.VOCAB_SIZE}, the config has {config.vocab_size}"
            )
        return ByteTokenizer(config.max_token_len)
    if config.tokenizer == "paligemma":
        if model_path is None:
            raise ValueError(
                f"π0 config {config.name} uses the PaliGemma tokenizer: "
                f"pass --tokenizer PATH to {PALIGEMMA_FILE}"
            )
        return PaligemmaTokenizer(model_path, config.max_token_len)
    raise ValueError(f"π0 config {config.name}: unknown tokenizer {config.tokenizer!r}")
