"""The export's growing data and video files: episodes appended back to back, a new file once one
passes its size limit, CHUNKS_SIZE files to a chunk folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.lerobot_format import CHUNKS_SIZE, DATA_PATH, TIME_BASE, VIDEO_PATH, ExportSettings


class CameraFile:
    """One camera's video: episodes encoded back to back, a new file once one passes the size limit."""

    def __init__(
        self, root: Path, key: str, width: int, height: int, fps: int, settings: ExportSettings
    ) -> None:
        self.root, self.key, self.width, self.height, self.fps = root, key, width, height, fps
        self.settings = settings
        self.chunk, self.file = 0, -1
        self.offset = 0  # where the next episode starts in the current file, in ticks
        self._container: Any = None
        self._stream: Any = None
        self._path: Path | None = None

    def add_episode(self, ticks: np.ndarray, length: int, images: Iterable[np.ndarray]) -> dict[str, Any]:
        """Encode an episode's frames at `ticks` after its start; it lasts `length` ticks."""
        if self._container is None or self._full():
            self._open_next()
        start = self.offset
        count = 0
        for tick, image in zip(ticks.tolist(), images, strict=False):
            self._encode(_video_frame(image, self.width, self.height, start + tick))
            count += 1
        if count != len(ticks):
            raise ValueError(f"{self.key}: {count} frames for {len(ticks)} steps")
        self.offset = start + length
        return {
            "chunk_index": self.chunk,
            "file_index": self.file,
            "from_timestamp": float(start * TIME_BASE),
            "to_timestamp": float(self.offset * TIME_BASE),
        }

    def _full(self) -> bool:
        assert self._path is not None
        return self.offset > 0 and self._path.stat().st_size >= self.settings.video_file_mb * 1024**2

    def _open_next(self) -> None:
        self.close()
        self.chunk, self.file = _next_file(self.chunk, self.file)
        self._path = self.root / VIDEO_PATH.format(
            video_key=self.key, chunk_index=self.chunk, file_index=self.file
        )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        options = {"crf": str(self.settings.crf), "g": str(self.settings.gop), "bf": "0"}
        options["preset"] = self.settings.preset
        self._container = av.open(str(self._path), "w")
        stream = self._container.add_stream("libx264", rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        stream.time_base = TIME_BASE
        self._stream, self.offset = stream, 0

    def _encode(self, frame: av.VideoFrame | None) -> None:
        for packet in self._stream.encode(frame):
            packet.duration = round(1 / (self.fps * TIME_BASE))  # the last frame's too: the file's length
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            self._encode(None)
            self._container.close()
            self._container = None


def _video_frame(image: np.ndarray, width: int, height: int, pts: int) -> av.VideoFrame:
    if image.shape != (height, width, 3):
        raise ValueError(f"a frame of shape {image.shape}, the stream is {height}x{width} RGB")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts, frame.time_base = pts, TIME_BASE
    return frame


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    """The file after (chunk, file): CHUNKS_SIZE files to a chunk folder."""
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class DataFiles:
    """The data parquet files: episodes' rows appended, a new file once one passes the size limit."""

    def __init__(self, root: Path, limit_mb: float) -> None:
        self.root, self.limit = root, limit_mb * 1024**2
        self.chunk, self.file = 0, -1
        self._writer: pq.ParquetWriter | None = None
        self._bytes = 0

    def add(self, table: pa.Table) -> tuple[int, int]:
        if self._writer is None or self._bytes >= self.limit:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer, self._bytes = pq.ParquetWriter(path, table.schema, compression="snappy"), 0
        self._writer.write_table(table)
        self._bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
