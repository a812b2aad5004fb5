"""Each episode folder's `episode.json`: what the catalogue holds about the episode (its row, its
session, its camera streams and segments), kept beside the episode's files so that a lost or
damaged catalogue can be rebuilt from the folders alone (recorder/rebuild.py).

The store writes it when the folder is made and after every change the catalogue makes to the
episode. The catalogue stays the source of truth: the copy is written to a temporary file and
renamed, so it is whole or absent, and failing to write it (a full disk) never fails the change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EPISODE_FILE = "episode.json"
VERSION = 1


def write_episode_file(folder: Path, snapshot: Mapping[str, Any]) -> None:
    """Replace the folder's copy of the catalogue's rows with `snapshot` (Catalogue.snapshot)."""
    path = Path(folder) / EPISODE_FILE
    temp = path.with_name(f".{EPISODE_FILE}.tmp")
    try:
        temp.write_text(json.dumps({"version": VERSION, **snapshot}, indent=1))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_episode_file(folder: Path) -> dict[str, Any] | None:
    """The snapshot kept in `folder`; None when there is none (a folder recorded before the copy
    existed); ValueError naming the file when it cannot be read."""
    path = Path(folder) / EPISODE_FILE
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from error
    if not isinstance(values, dict) or values.get("version") != VERSION:
        raise ValueError(f"{path}: not an episode file of version {VERSION}")
    missing = [key for key in ("episode", "session", "streams", "segments") if key not in values]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(missing)}")
    return values
