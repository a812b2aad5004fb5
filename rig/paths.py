"""Where the rig keeps its data by default (imports nothing, so the CLI can use it at start-up)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """`$XDG_DATA_HOME/rig`, i.e. `~/.local/share/rig` unless the user says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rig"
