"""Sending a command to the backend from a key press: a refusal is a notification, never a crash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import App
from textual.widget import Widget

from tui.state import CommandRefused


def send(node: Widget | App[Any], command: Callable[..., None], *args: object, **kwargs: object) -> bool:
    """Run `command`; when the rig refuses, tell the operator why. True when it was accepted."""
    try:
        command(*args, **kwargs)
    except CommandRefused as refusal:
        node.notify(str(refusal), title="refused", severity="warning")
        return False
    return True
