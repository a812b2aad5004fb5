"""Video files of the episode store: one fragmented MP4 per camera per episode, encoded while recording.

Why a fragmented MP4: a plain MP4 keeps its index (`moov`) at the end, so a killed recorder leaves a
file no player can open. With `frag_keyframe+empty_moov` the muxer writes an empty index first and
then one self-describing fragment (`moof` + `mdat`) per keyframe interval, and the writer pushes each
fragment to the kernel as soon as it is complete (`flush_packets`, unbuffered file). A SIGKILL
therefore loses only the frames after the last keyframe (`gop` frames at most, plus what waited in a
`CameraEncoder`'s queue); the writer also fsyncs about twice a second so a power cut loses little
more. A reader drops a trailing fragment that was cut short.

Encoder settings, measured on this 2-core machine (PyAV 18.1, FFmpeg 8; 480x640 frames rendered by the
MuJoCo twin with both arms moving: top, angle and left-wrist cameras, 150 frames each; RGB->yuv420p
conversion, muxing and writing included; crf 23 (SVT-AV1: 35), gop 10). "fps" is wall-clock frames/s
of one encoder, "/CPU-s" frames per CPU-second; "3 at once" is three encoders with one thread each
encoding side by side, the recorder's situation, and "x" that rate over the 150 frames/s that three
cameras at 50 Hz need; PSNR compares the decoded RGB with the original. The machine is shared and
its speed drifts by about 20 %: the last column gives the range of "x" over three runs.

    setting                  1 thread      2 threads     3 at once       bytes/   PSNR   x over
                             fps  /CPU-s   fps  /CPU-s   fps     x       frame    dB     3 runs
    x264 ultrafast           357   302     467   298     556   3.71x     4951    46.3   3.3-3.7
    x264 ultrafast+zl        337   289     444   303     668   4.45x     4951    46.3   3.7-4.5
    x264 superfast           230   190     244   180     363   2.42x     2350    43.9   2.0-2.4
    x264 superfast+zl        343   284     296   213     426   2.84x     2638    44.7   2.8-3.1
    x264 veryfast            162   141     217   144     308   2.06x     1213    41.8   1.6-2.1
    x264 veryfast+zl         177   155     219   160     348   2.32x     2105    44.3   2.1-2.4
    SVT-AV1 preset 12        144    93     176    87     210   1.40x     1484    39.1   1.2-1.4
    SVT-AV1 preset 10         93    67     114    55     156   1.04x     1429    42.1   0.9-1.0

(+zl: tune=zerolatency. SVT-AV1 runs threads of its own whatever `lp` says, hence fps above /CPU-s.)
Every x264 setting clears 1.5x; neither SVT-AV1 preset does (preset 12 at best 1.4x, with nothing
left for the control loop). The default, superfast+zerolatency, keeps about 3x headroom (three
cameras take ~0.7 of the two cores) for files half the size of ultrafast's; veryfast+zerolatency
saves another 20 % of bytes for 30 % more CPU. Plain veryfast makes the smallest files but its
lookahead and B-frames hold frames inside the encoder (more to lose in a kill) and cost the most.
Synthetic frames of `recorder.bench` encode at about the same speed and size as these.

The conversion from RGB matters as much as the preset: `VideoFrame.from_ndarray(image)` handed to
the encoder (which then converts with a fresh swscale context per frame) costs ~2.4 ms a frame and
brings ultrafast down to ~200 frames per CPU-second; copying into one preallocated frame and reusing
one `VideoReformatter` costs ~0.8 ms.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

# The muxer's options: fragments start at keyframes, the (empty) index comes first, fragments carry
# their own base offsets (what most demuxers expect), and the I/O buffer is flushed after every packet
# so that a finished fragment reaches the kernel at once instead of waiting for 32 KiB more. (FFmpeg
# 8's default, -1, flushes too: a killed writer lost no more without it. Saying 1 keeps it so.)
_CONTAINER_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "flush_packets": "1",
}


@dataclass(frozen=True)
class VideoSettings:
    """How a camera's frames are encoded.

    Defaults (from the module's measurements): H.264 (libx264) `superfast` with `tune=zerolatency`,
    about 3x the encode rate three 480x640 cameras at 50 Hz need on two cores, at ~2.6 kB a rendered
    frame. zerolatency turns off B-frames, lookahead and mb-tree, so each frame's packet leaves the
    encoder as the frame goes in (nothing waits inside the encoder when the process dies) and decode
    order is presentation order. One thread per camera: three cameras already give two cores three
    encoder threads, and one thread adds no frame-thread delay. H.264 rather than AV1: SVT-AV1's
    fastest preset (12) reaches at most 1.4x the rate needed, with nothing left for the control loop.
    A gop of 10 (0.2 s at 50 Hz) bounds both what random access decodes and what a kill loses.
    """

    codec: str = "libx264"  # or "libsvtav1"
    preset: str = "superfast"  # x264: ultrafast, superfast, veryfast, ...; SVT-AV1: "0".."13"
    tune: str | None = "zerolatency"  # x264 only
    crf: int = 23  # constant quality: x264 0..51 (23 is its default), SVT-AV1 0..63
    gop: int = 10  # keyframe interval in frames: random access decodes < gop frames; a kill loses < gop
    pix_fmt: str = "yuv420p"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.gop < 1 or self.threads < 1:
            raise ValueError(f"gop and threads must be at least 1, got gop={self.gop} threads={self.threads}")

    def codec_options(self) -> dict[str, str]:
        """The encoder's private options for these settings."""
        options = {"preset": str(self.preset), "crf": str(self.crf)}
        if self.codec == "libx264":
            # No scene-cut keyframes: keyframes fall exactly every `gop` frames.
            options["sc_threshold"] = "0"
            if self.tune:
                options["tune"] = self.tune
        elif self.codec == "libsvtav1":
            options["svtav1-params"] = f"lp={self.threads}:scd=0"
        return options


def _time_base(fps: float) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return 1 / Fraction(fps).limit_denominator(1001)


class _File:
    """The file under the muxer: unbuffered (a flushed fragment goes straight to the kernel), every
    byte written or an OSError raised (os.write may write less, and FFmpeg would not notice)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class VideoWriter:
    """Encodes RGB frames into a fragmented MP4 as they come; frame i has pts i in time base 1/fps.

    Not thread-safe: one thread writes (see `CameraEncoder` for a writer in its own thread).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float,
        settings: VideoSettings | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self.settings = settings = settings or VideoSettings()
        if settings.pix_fmt.startswith("yuv420") and (width % 2 or height % 2):
            raise ValueError(
                f"{self.path.name}: {settings.pix_fmt} video needs an even width and height, got "
                f"{width}x{height}; give the camera an even size"
            )
        self._frames = 0
        self._good_size = 0  # where the file ends after the last whole fragment
        self._frames_in_file = 0  # frames in the whole fragments
        self._failed = False
        self._closed = False
        time_base = _time_base(fps)
        self._file = _File(self.path)
        try:
            self._container = av.open(self._file, "w", format="mp4", container_options=_CONTAINER_OPTIONS)
            stream = self._container.add_stream(
                settings.codec, rate=1 / time_base, options=settings.codec_options()
            )
            assert isinstance(stream, av.VideoStream)
            self._stream = stream
            context = stream.codec_context
            context.width, context.height, context.pix_fmt = width, height, settings.pix_fmt
            context.time_base = time_base
            context.gop_size = settings.gop
            context.thread_count = settings.threads
            context.colorspace = Colorspace.ITU601  # what the RGB->YUV conversion below uses
            context.color_range = ColorRange.MPEG
            stream.time_base = time_base
            self._container.start_encoding()
        except BaseException:
            self._file.close()
            raise
        self._good_size = self._file.tell()
        # One RGB frame and one converter for the whole file: a fresh frame and swscale context per
        # image would cost three times the conversion itself.
        self._rgb_frame = av.VideoFrame(width, height, "rgb24")
        plane = self._rgb_frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(height, plane.line_size)
        self._rgb = rows[:, : width * 3].reshape(height, width, 3)
        self._reformatter = VideoReformatter()

    @property
    def frames_written(self) -> int:
        """Frames encoded (the last few reach the file at the next keyframe or on close); after a disk
        error, the frames that the file holds."""
        return self._frames

    def write(self, image: np.ndarray) -> None:
        """Encode one (height, width, 3) uint8 RGB image as the next frame.

        An OSError from the disk (ENOSPC, EFBIG, ...) propagates unchanged, after the file has been
        cut back to its last whole fragment; the writer then refuses further frames.
        """
        check_image(image, self.width, self.height)
        if self._closed or self._failed:
            raise ValueError(f"{self.path}: the writer is {'closed' if self._closed else 'broken'}")
        self._rgb[...] = image
        frame = self._reformatter.reformat(
            self._rgb_frame,
            format=self.settings.pix_fmt,
            dst_colorspace=Colorspace.ITU601,
            dst_color_range=ColorRange.MPEG,
        )
        frame.pts = self._frames
        self._mux(self._stream.encode(frame))
        self._frames += 1

    def _mux(self, packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            # A keyframe starts a fragment: muxing it writes out every frame before it.
            first_of_fragment = packet.pts if packet.is_keyframe and packet.pts is not None else None
            try:
                self._container.mux_one(packet)
            except OSError:
                self._fail()
                raise
            self._good_size = self._file.tell()
            if first_of_fragment is not None:
                self._frames_in_file = int(first_of_fragment)

    def _fail(self) -> None:
        """Cut off a half-written fragment (shrinking needs no space) and close without a trailer;
        `frames_written` falls back to the frames the file holds."""
        self._failed = True
        self._frames = self._frames_in_file
        with contextlib.suppress(OSError):  # the reader drops a partial fragment anyway
            os.ftruncate(self._file.fd, self._good_size)
        self._file.close()  # a closed file makes PyAV skip the trailer
        with contextlib.suppress(OSError, av.FFmpegError):  # the error being raised says what went wrong
            self._container.close()

    def flush(self) -> None:
        """Make the fragments written so far survive a power cut (a kill never loses them)."""
        if not (self._closed or self._failed):
            try:
                os.fsync(self._file.fd)
            except OSError:  # some filesystems report a full disk only here
                self._fail()
                raise

    def close(self) -> None:
        """Encode what the encoder still holds, write the last fragment, close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._failed:
            return
        try:
            self._mux(self._stream.encode(None))
            try:
                self._container.close()  # the trailer: the last fragment
            except OSError:
                self._fail()
                raise
            self._frames_in_file = self._frames
            os.fsync(self._file.fd)
        finally:
            self._file.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_image(image: np.ndarray, width: int, height: int) -> None:
    """Raise a ValueError that says what was expected, rather than letting numpy broadcast."""
    if not isinstance(image, np.ndarray) or image.shape != (height, width, 3) or image.dtype != np.uint8:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a ({height}, {width}, 3) uint8 RGB image, got {got}")


class VideoReader:
    """Random access to the frames of one video file, decoding no more than it must.

    Opening demuxes the whole file once (packets only, no decoding: ~50 ms for a minute at 50 Hz) to
    learn each frame's pts and which frames are keyframes. `frame(i)` seeks to the keyframe at or
    before i and decodes forward, and keeps its place: a later i that no keyframe separates from the
    decoder's position decodes on from there without seeking. Measured at 480x640, gop 10: 1.3 ms a
    frame read in order, 5.5 ms a frame at random. A file whose writer was killed reads up to its last
    whole frame (whole fragments, and the whole frames of a fragment cut short). Not thread-safe: one
    reader per thread.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._container = av.open(str(self.path))
        try:
            if not self._container.streams.video:
                raise ValueError(f"{self.path}: no video stream (the writer died before its header?)")
            self._stream = self._container.streams.video[0]
            pts, keyframes = _index(self._container, self._stream, self.path.stat().st_size)
        except BaseException:
            self._container.close()
            raise
        self._pts = pts  # presentation timestamps in frame order
        self._index_of = {int(p): i for i, p in enumerate(pts)}
        self._keyframes = keyframes  # frame indices of the keyframes, ascending
        self._decoded: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._next = 0  # the index of the frame `_decoded` yields next
        self._last: tuple[int, av.VideoFrame] | None = None
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.width = self._stream.codec_context.width
        self.height = self._stream.codec_context.height

    def __len__(self) -> int:
        return len(self._pts)

    @property
    def keyframes(self) -> tuple[int, ...]:
        """The indices of the keyframes (where decoding can start)."""
        return tuple(int(k) for k in self._keyframes)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as a (height, width, 3) uint8 RGB array (a new array each call)."""
        if not 0 <= index < len(self._pts):
            raise IndexError(f"{self.path}: frame {index} of {len(self._pts)}")
        if self._last is not None and self._last[0] == index:
            return self._last[1].to_ndarray(format="rgb24")
        key = self._keyframe_before(index)
        if self._decoded is None or not key <= self._next <= index:
            self._seek(key)
        assert self._decoded is not None
        for at, decoded in self._decoded:
            self._next = at + 1
            if at == index:
                self._last = (at, decoded)
                return decoded.to_ndarray(format="rgb24")
            if at > index:
                break
        self._decoded = None
        raise RuntimeError(f"{self.path}: decoding did not reach frame {index} (the file may be damaged)")

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as one (n, height, width, 3) array; decoded in ascending order whatever
        the order asked, so each keyframe interval is decoded once."""
        out = np.empty((len(indices), self.height, self.width, 3), np.uint8)
        for k in np.argsort(np.asarray(indices), kind="stable"):
            out[k] = self.frame(int(indices[k]))
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self.frame(index)

    def _keyframe_before(self, index: int) -> int:
        position = int(np.searchsorted(self._keyframes, index, side="right")) - 1
        return int(self._keyframes[max(position, 0)])

    def _seek(self, key: int) -> None:
        self._container.seek(int(self._pts[key]), stream=self._stream, backward=True, any_frame=False)
        self._decoded = self._frames_until_end()
        self._next = key

    def _frames_until_end(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) from the demuxer's position on; a cut-off last fragment ends the stream."""
        try:
            for decoded in self._container.decode(self._stream):
                at = self._index_of.get(decoded.pts) if decoded.pts is not None else None
                if at is None:
                    return  # a frame of the fragment the index left out (cut short)
                yield at, decoded
        except av.error.InvalidDataError:
            return

    def close(self) -> None:
        self._decoded = None
        self._last = None
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _index(
    container: av.container.InputContainer, stream: av.VideoStream, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(pts of each frame in presentation order, indices of the keyframes), of the packets before the
    first one that the file does not hold whole: a killed writer's last fragment may be cut short, and
    the demuxer then hands out a partial packet (flagged corrupt) or stops."""
    packets: list[tuple[int, bool]] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if (
                packet.pts is None
                or packet.is_corrupt
                or packet.pos is None
                or packet.pos + packet.size > size
            ):
                break
            packets.append((int(packet.pts), packet.is_keyframe))
    except av.error.InvalidDataError:
        pass  # a cut-off fragment header: keep what came before it
    container.seek(0)
    packets.sort()
    pts = np.array([p for p, _ in packets], np.int64)
    keyframes = np.array([i for i, (_, key) in enumerate(packets) if key], np.int64)
    if len(pts) and (not len(keyframes) or keyframes[0] != 0):
        raise ValueError(f"the first frame of the video is not a keyframe: {len(pts)} frames undecodable")
    return pts, keyframes


class CameraEncoder:
    """A `VideoWriter` in its own thread behind a bounded queue, so that the recorder's writer thread
    never waits on the encoder.

    `offer(image)` queues the image *by reference, without copying*: from then on it belongs to the
    encoder, and the caller must not write into it (the loop's camera frames are fresh arrays, never
    reused). A full queue refuses the frame and counts it in `dropped`; so does every frame after the
    encoder failed (`error` holds why, e.g. the disk's OSError) and every queued frame that the
    failure left unwritten. The thread fsyncs the file every `sync_s` seconds, so a power cut loses
    about as much as a kill: the frames since the last keyframe plus what waited in the queue.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float,
        settings: VideoSettings | None = None,
        queue_frames: int = 50,
        sync_s: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = width, height
        self._writer = VideoWriter(path, width, height, fps, settings)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=queue_frames)
        self._sync_s = sync_s
        self._refused = 0  # counted by the offering thread
        self._lost = 0  # accepted, then not written after a failure; counted by the encoder thread
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"encoder {self.path.name}", daemon=True)
        self._thread.start()

    @property
    def written(self) -> int:
        """Frames encoded so far."""
        return self._writer.frames_written

    @property
    def dropped(self) -> int:
        """Frames offered that will never be in the file."""
        return self._refused + self._lost

    @property
    def backlog(self) -> int:
        """Frames waiting in the queue."""
        return self._queue.qsize()

    @property
    def error(self) -> BaseException | None:
        """Why the encoder stopped, if it did (an OSError from the disk keeps its errno)."""
        return self._error

    def offer(self, image: np.ndarray) -> bool:
        """Queue `image` for encoding without waiting; False when it was dropped (queue full, encoder
        failed). A wrong shape or dtype raises ValueError: that is a bug, not a drop."""
        check_image(image, self.width, self.height)
        if self._closing:
            raise ValueError(f"{self.path}: the encoder is closed")
        if self._error is None:
            try:
                self._queue.put_nowait(image)
                return True
            except queue.Full:
                pass
        self._refused += 1
        return False

    def close(self, timeout: float | None = None) -> None:
        """Encode what is queued, finish the file and stop the thread. Idempotent; raises TimeoutError
        when that takes longer than `timeout` seconds (the thread then finishes on its own)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._closing:
            self._closing = True
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                self._closing = False
                raise TimeoutError(f"{self.path}: the encoder did not drain within {timeout} s") from None
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            raise TimeoutError(f"{self.path}: the encoder did not finish within {timeout} s")

    def _run(self) -> None:
        last_sync = time.monotonic()
        while (image := self._queue.get()) is not None:
            if self._error is not None:
                self._lost += 1
                continue  # keep draining, so that close() and offer() never wait on a dead encoder
            before = self._writer.frames_written
            try:
                self._writer.write(image)
                if time.monotonic() - last_sync >= self._sync_s:
                    self._writer.flush()
                    last_sync = time.monotonic()
            except BaseException as error:
                self._error = error
                # This frame, and those a failed write cut back out of the file.
                self._lost += 1 + before - self._writer.frames_written
        before = self._writer.frames_written
        try:
            self._writer.close()
        except BaseException as error:
            self._lost += before - self._writer.frames_written
            if self._error is None:
                self._error = error

    def __enter__(self) -> CameraEncoder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
