"""The parser every `rig` command is built with: each option's help ends with its default, unless
the help already says it, so `--help` answers "what happens if I leave this out"."""

from __future__ import annotations

import argparse
from typing import Any

UNSAID_DEFAULTS = (None, False, argparse.SUPPRESS)  # nothing to add: off, or the help says what


def _unsaid(default: object) -> bool:
    return any(default is unsaid for unsaid in UNSAID_DEFAULTS)  # `is`: a default of 0 is said


class DefaultsFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if not action.option_strings or "default" in help_text or _unsaid(action.default):
            return help_text
        if isinstance(action.default, list | tuple):
            return help_text
        return f"{help_text} (default: %(default)s)".lstrip()


class RigParser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands (at any depth) format their help the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
