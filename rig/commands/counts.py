"""Argument types for counts and durations: a careless `--episodes -1` is refused by argparse in one
line, before any run folder, store row or log line is written."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def _at_least(kind: Callable[[str], Number], lowest: Number, words: str) -> Callable[[str], Number]:
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value >= lowest:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not {words}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _at_least(int, 1, "a count of 1 or more")
non_negative_int = _at_least(int, 0, "0 or more")
non_negative_float = _at_least(float, 0.0, "0 or more")


def positive_float(text: str) -> float:
    """Seconds, minutes or a rate: above zero."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value
