"""The operator's commands typed on the terminal (a letter, then Enter), for `rig record` and `rig run`."""

from __future__ import annotations

import queue
import threading
from typing import TextIO


class TerminalCommands:
    """One letter per line from `stream`, read on a thread so the flow never blocks on it; nothing is
    read from a stream that is not a terminal."""

    def __init__(self, stream: TextIO | None) -> None:
        self._commands: queue.Queue[str] = queue.Queue()
        if stream is not None and stream.isatty():
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._commands.put(line.strip().lower()[:1])

    def poll(self) -> str | None:
        try:
            return self._commands.get_nowait()
        except queue.Empty:
            return None
