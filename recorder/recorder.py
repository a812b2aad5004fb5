"""Recording episodes from the control loop, off the control thread.

The loop hands every `Step` to `EpisodeRecorder.on_step`, which only puts it on a bounded queue:
the loop never waits for the disk or an encoder. A writer thread appends each step to the
episode's step file and offers each camera's frame to that camera's encoder thread. Nothing is
lost silently: a step the queue had no room for, and a frame an encoder had no room for, are
counted per episode and reported. When the disk fills up, recording stops cleanly: what was
written stays readable and the episode is closed as interrupted with the reason. Any other error
writing a step (a malformed step, an encoder that failed) stops the episode the same way, with the
error in the episode's notes: the writer thread never dies leaving an episode that looks complete.

An episode's end also labels it: each run of autonomous steps and of intervention steps (the
operator took over from the policy) becomes a segment in the catalogue, read back from the records
that reached the disk, so that interventions can be found and weighted as DAgger data; and it is
judged (recorder/quality.py): an episode in which the arms faulted, held or never moved is flagged,
so that training leaves it out.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from recorder.catalogue import Segment
from recorder.errors import FULL_ERRNOS
from recorder.quality import FAULT_EVENT, describe_flags, judge_episode
from recorder.steps import StepWriter, labeled_segments, read_steps, step_dtype, to_record
from recorder.store import Store, StoreFullError
from recorder.video import CameraEncoder, VideoSettings
from rig.step import Step


@dataclass(frozen=True)
class CameraFormat:
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class EpisodeSummary:
    episode_id: int
    task: str
    steps: int
    duration_s: float
    status: str
    outcome: str | None
    frames_written: Mapping[str, int] = field(default_factory=dict)
    frames_dropped: Mapping[str, int] = field(default_factory=dict)
    steps_dropped: int = 0
    error: str | None = None
    segments: tuple[Segment, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)  # flag -> why (recorder/quality.py)

    @property
    def interventions(self) -> tuple[Segment, ...]:
        return tuple(s for s in self.segments if s.label == "intervention")

    @property
    def intervention_s(self) -> float:
        """Time under the operator's control, at the episode's mean spacing of recorded steps."""
        taken = sum(s.steps for s in self.interventions)
        return taken * self.duration_s / self.steps if self.steps else 0.0

    def describe(self) -> str:
        drops = sum(self.frames_dropped.values())
        parts = [
            f"episode {self.episode_id}: {self.steps} steps, {self.duration_s:.1f} s, {self.status}",
            f"outcome {self.outcome or 'unknown'}",
            f"frames dropped {drops}" + (f" {dict(self.frames_dropped)}" if drops else ""),
        ]
        if count := len(self.interventions):
            parts.append(f"{count} intervention{'s' * (count != 1)}, {self.intervention_s:.1f} s")
        if self.steps_dropped:
            parts.append(f"steps dropped {self.steps_dropped}")
        if self.flags:
            parts.append(describe_flags(self.flags))
        if self.error:
            parts.append(self.error)
        return ", ".join(parts)


class _Episode:
    """The files and counters of the episode being written (owned by the writer thread)."""

    def __init__(
        self,
        store: Store,
        episode_id: int,
        task: str,
        cameras: Sequence[CameraFormat],
        fps: float,
        settings: VideoSettings,
    ) -> None:
        self.id, self.task = episode_id, task
        self.folder = folder = store.new_episode_dir(episode_id)
        names = [c.name for c in cameras]
        self.dtype = step_dtype(names)
        self.steps = StepWriter(folder, names)
        self.encoders = {
            c.name: CameraEncoder(folder / f"{c.name}.mp4", c.width, c.height, fps, settings) for c in cameras
        }
        self.missing = dict.fromkeys(names, 0)
        self.queued = dict.fromkeys(names, 0)  # frames handed to each encoder: the next one's index
        self.first_t: float | None = None
        self.last_t = 0.0

    def write(self, step: Step) -> None:
        if self.first_t is None:
            self.first_t = step.t
        self.last_t = step.t
        record = to_record(step, self.dtype)
        for name, encoder in self.encoders.items():
            if encoder.error is not None:
                raise encoder.error
            sample = step.cameras.get(name)
            if sample is None:
                self.missing[name] += 1  # the camera had no frame for this step: counted as dropped
            elif encoder.offer(sample.image):
                record[f"{name}/video_index"] = self.queued[name]
                self.queued[name] += 1
        self.steps.append(record)

    def close(self) -> tuple[dict[str, int], dict[str, int], OSError | None]:
        """Finish every file, as far as the disk lets it: (frames written, frames dropped) per camera,
        and the disk error that stopped a file from closing, if one did."""
        failure: OSError | None = None
        closers = [self.steps.close, *(encoder.close for encoder in self.encoders.values())]
        for close in closers:
            try:
                close()
            except OSError as error:
                failure = failure or error
        written = {name: encoder.written for name, encoder in self.encoders.items()}
        dropped = {name: encoder.dropped + self.missing[name] for name, encoder in self.encoders.items()}
        return written, dropped, failure


class EpisodeRecorder:
    """Writes the loop's steps into a store, one episode at a time."""

    def __init__(
        self,
        store: Store,
        session_id: int,
        cameras: Sequence[CameraFormat],
        rate_hz: float,
        settings: VideoSettings | None = None,
        queue_steps: int = 250,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.cameras = list(cameras)
        self.rate_hz = rate_hz
        self.settings = settings or VideoSettings()
        self._queue: queue.Queue[Step | None] = queue.Queue(maxsize=queue_steps)
        self._episode: _Episode | None = None
        self._accepting = False
        self._steps_dropped = 0
        self._faults: list[str] = []  # the loop's fault events during the episode, for judging it
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # why recording stopped on its own (disk full, a failed write)
        self._disk_is_full = False  # a full disk refuses further episodes; another error only its own

    @property
    def recording(self) -> bool:
        return self._accepting

    @property
    def caught_up(self) -> bool:
        """Whether no step waits in the queue and no frame for an encoder: a caller that offers steps
        faster than the rig's rate (a test, a benchmark) waits for this rather than guess a pause,
        since the recorder drops what it has no room for instead of blocking the loop."""
        episode = self._episode
        encoders = episode.encoders.values() if episode is not None else ()
        return self._queue.empty() and all(encoder.backlog == 0 for encoder in encoders)

    # ---- the loop's side: never blocks ---------------------------------------------------
    def on_step(self, step: Step) -> None:
        if not self._accepting:
            return
        if step.events:  # kept here, not by the writer: a step the queue has no room for still counts
            self._faults.extend(event for event in step.events if event.startswith(FAULT_EVENT))
        try:
            self._queue.put_nowait(step)
        except queue.Full:
            self._steps_dropped += 1

    # ---- episodes --------------------------------------------------------------------------
    def begin(self, task: str, tags: Sequence[str] = ()) -> int:
        """Start an episode of `task`; `tags` label it in the catalogue (e.g. "eval": not training data)."""
        if self._episode is not None:
            raise RuntimeError("an episode is already being recorded; end or discard it first")
        if self._disk_is_full and self.error is not None:
            raise StoreFullError(self.error)
        self.error = None  # the last episode's failure was told with it
        catalogue = self.store.catalogue
        episode_id = catalogue.start_episode(self.session_id, task, self.rate_hz, self._stream_rows(), tags)
        self._episode = _Episode(self.store, episode_id, task, self.cameras, self.rate_hz, self.settings)
        self._steps_dropped = 0
        self._faults = []
        self._thread = threading.Thread(target=self._write, name=f"recorder-{episode_id}", daemon=True)
        self._thread.start()
        self._accepting = True
        return episode_id

    def _stream_rows(self) -> list[dict[str, object]]:
        return [
            {
                "camera": c.name,
                "width": c.width,
                "height": c.height,
                "fps": self.rate_hz,
                "codec": self.settings.codec,
                "file": f"{c.name}.mp4",
            }
            for c in self.cameras
        ]

    def end(
        self, outcome: str | None = None, twin_reward: int | None = None, cut_short: str | None = None
    ) -> EpisodeSummary:
        """Stop taking steps, write out what is queued, close the files, record the episode. An
        episode `cut_short` (the reason: ^C, say) is kept, marked interrupted, the reason in its notes."""
        if cut_short is not None and self.error is None:
            self.error = cut_short
        episode = self._stop_writer()
        written, dropped, failure = episode.close()
        if failure is not None and self.error is None:
            self._disk_full(failure)
        status = "interrupted" if self.error else "complete"
        steps = episode.steps.steps_written
        duration = 0.0 if episode.first_t is None else episode.last_t - episode.first_t + 1.0 / self.rate_hz
        records = read_steps(episode.folder)
        segments = tuple(labeled_segments(records))
        flags = judge_episode(records, self._faults, self.rate_hz)
        catalogue = self.store.catalogue
        try:
            for name in written:
                catalogue.update_stream(episode.id, name, written[name], dropped[name])
            catalogue.finish_episode(
                episode.id,
                steps=steps,
                duration_s=duration,
                status=status,
                frames_dropped=dropped,
                outcome=outcome,
                twin_reward=twin_reward,
                segments=segments,
                flags=flags,
            )
            if self.error:
                catalogue.set_notes(episode.id, self.error)
        except (sqlite3.OperationalError, StoreFullError) as error:  # the catalogue shares the full disk
            self.error = (self.error or "") + (
                f" The catalogue could not be updated ({error}); the episode is marked interrupted, with "
                "every step and frame that reached the disk, the next time the store is opened."
            )
        return EpisodeSummary(
            episode.id,
            episode.task,
            steps,
            duration,
            status,
            outcome,
            written,
            dropped,
            self._steps_dropped,
            self.error,
            segments,
            flags,
        )

    def discard(self) -> None:
        """Throw the current episode away (re-record)."""
        episode = self._stop_writer()
        episode.close()  # its files go anyway; a disk error closing them changes nothing
        self.store.delete_episode(episode.id)

    def _stop_writer(self) -> _Episode:
        if self._episode is None:
            raise RuntimeError("no episode is being recorded")
        self._accepting = False
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        episode, self._episode = self._episode, None
        return episode

    # ---- the writer thread -----------------------------------------------------------------
    def _write(self) -> None:
        assert self._episode is not None
        episode = self._episode
        while True:
            step = self._queue.get()
            if step is None:
                return
            if self.error is not None:
                continue  # drain: nothing more is written once the disk is full
            try:
                episode.write(step)
            except OSError as error:
                if isinstance(error, StoreFullError) or error.errno in FULL_ERRNOS:
                    self._disk_full(error)
                else:
                    self._write_failed(step, episode, error)
            except Exception as error:  # a malformed step, a failed encoder: the episode stops, says why
                self._write_failed(step, episode, error)

    def _write_failed(self, step: Step, episode: _Episode, error: Exception) -> None:
        self._accepting = False
        self.error = (
            f"recording stopped at step {step.index}: it could not be written ({type(error).__name__}: "
            f"{error}). The {episode.steps.steps_appended} steps before it "
            "are kept and the episode is marked interrupted."
        )

    def _disk_full(self, error: OSError) -> None:
        self._accepting = False
        self._disk_is_full = True
        self.error = (
            f"recording stopped at {time.strftime('%H:%M:%S')}: the disk is full ({error}). What was "
            "recorded is kept; free some space (`rig episodes`, `rig delete`) and record again."
        )
