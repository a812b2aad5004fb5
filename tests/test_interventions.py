"""What autonomous episodes keep for DAgger-style training, on real files: each step's mode and the
policy's proposal, intervention segments, episode tags (eval rollouts stay out of training), the
catalogue's v1 -> v2 migration, and episodes recorded before any of it."""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import record_step, synthetic_step

from policy.normalize import NormStats, compute_norm_stats
from recorder.catalogue import MIGRATIONS, CameraStream, Catalogue, Segment
from recorder.reader import WindowReader
from recorder.recorder import CameraFormat, EpisodeRecorder, EpisodeSummary
from recorder.steps import HEADER, RECORDS, StepWriter, labeled_segments, read_steps, step_dtype, to_record
from recorder.store import Store
from rig.commands.episodes import list_episodes, show_episode
from rig.step import MODES, STATE_DIM, Step

CAMERAS = ("cam_high",)
SIZE = (48, 64)
STEPS = 90
INTERVENTION = range(30, 60)


def proposal(index: int) -> np.ndarray:
    return np.full(STATE_DIM, 100.0 + index, np.float32)


def dagger_mode(index: int) -> str:
    return "intervention" if index in INTERVENTION else "autonomous"


def policy_step(episode: int, index: int, mode: str, policy_action: np.ndarray | None) -> Step:
    step = synthetic_step(episode, index, CAMERAS, SIZE)
    return dataclasses.replace(step, mode=mode, policy_action=policy_action)


def record(
    store: Store,
    make: Callable[[int], Step],
    steps: int = STEPS,
    task: str = "transfer the cube",
    tags: Sequence[str] = (),
) -> EpisodeSummary:
    session = store.catalogue.start_session(
        profile="synthetic", profile_snapshot="", calibration={}, rig_version="test"
    )
    recorder = EpisodeRecorder(store, session, [CameraFormat(c, SIZE[1], SIZE[0]) for c in CAMERAS], 50.0)
    recorder.begin(task, tags=tags)
    for index in range(steps):
        record_step(recorder, make(index))
    summary = recorder.end("success")
    assert summary.steps == steps, summary.describe()
    return summary


def autonomous_episode(store: Store, episode: int = 0, tags: Sequence[str] = ()) -> EpisodeSummary:
    return record(store, lambda i: policy_step(episode, i, dagger_mode(i), proposal(i)), tags=tags)


def teleop_episode(store: Store, episode: int = 0, tags: Sequence[str] = ()) -> EpisodeSummary:
    return record(store, lambda i: policy_step(episode, i, "teleop", None), tags=tags)


# ---- modes, proposals and segments ---------------------------------------------------------------


def test_an_intervention_becomes_a_segment_between_autonomous_ones(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        summary = autonomous_episode(store)
        expected = [("autonomous", 0, 30), ("intervention", 30, 60), ("autonomous", 60, STEPS)]
        stored = store.catalogue.segments(summary.episode_id)
        assert [(s.label, s.start_step, s.end_step) for s in stored] == expected
        assert all(s.episode_id == summary.episode_id for s in stored)
        assert [(s.label, s.start_step, s.end_step) for s in summary.segments] == expected
        assert "1 intervention, 0.6 s" in summary.describe()
        steps = read_steps(store.episode_dir(summary.episode_id))
    assert [MODES[code] for code in steps["mode"]] == [dagger_mode(i) for i in range(STEPS)]
    np.testing.assert_array_equal(steps["policy_action"], np.stack([proposal(i) for i in range(STEPS)]))
    # What was sent (the human's action during the intervention) is kept apart from the proposal.
    assert not np.allclose(steps["action"][40], steps["policy_action"][40])


def test_a_teleop_episode_has_no_segments_and_no_proposals(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        summary = teleop_episode(store)
        assert store.catalogue.segments(summary.episode_id) == [] and summary.segments == ()
        assert "intervention" not in summary.describe()
        steps = read_steps(store.episode_dir(summary.episode_id))
    assert (steps["mode"] == MODES.index("teleop")).all()
    assert np.isnan(steps["policy_action"]).all()


def test_segments_are_the_maximal_runs_of_autonomous_and_intervention_steps() -> None:
    labels = ["teleop"] * 3 + ["autonomous"] * 4 + ["intervention"] * 2 + ["no such mode"] + ["autonomous"]
    zero = np.zeros(STATE_DIM)
    dtype = step_dtype(())
    steps = [Step(i, i / 50, zero, zero, zero, zero, None, label) for i, label in enumerate(labels)]
    records = np.stack([to_record(step, dtype) for step in steps])
    assert records["mode"][9] == -1
    assert labeled_segments(records) == [
        Segment("autonomous", 3, 7),
        Segment("intervention", 7, 9),
        Segment("autonomous", 10, 11),
    ]
    assert labeled_segments(records[:0]) == []


def test_a_recording_cut_short_gets_its_segments_when_the_store_recovers_it(tmp_path: Path) -> None:
    with Store(tmp_path) as store:  # a recorder that dies after 45 steps: nothing finishes the episode
        session = store.catalogue.start_session(
            profile="x", profile_snapshot="", calibration={}, rig_version="test"
        )
        episode = store.catalogue.start_episode(session, "transfer the cube", 50.0, tags=["autonomous"])
        with StepWriter(store.new_episode_dir(episode), []) as writer:
            for i in range(45):
                writer.append(to_record(policy_step(0, i, dagger_mode(i), proposal(i)), writer.dtype))
    with Store(tmp_path) as store:
        assert store.recovered == (episode,)
        assert store.catalogue.episode(episode).status == "interrupted"
        stored = store.catalogue.segments(episode)
    assert [(s.label, s.start_step, s.end_step) for s in stored] == [
        ("autonomous", 0, 30),
        ("intervention", 30, 45),
    ]


# ---- tags: evaluation rollouts are not demonstrations ---------------------------------------------


def test_eval_episodes_are_left_out_of_training_windows_and_norm_stats(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        demo = teleop_episode(store, episode=0).episode_id
        rollout = autonomous_episode(store, episode=5, tags=("eval", "autonomous")).episode_id
        catalogue = store.catalogue
        assert catalogue.episode(rollout).tags == ("eval", "autonomous")
        assert catalogue.episode(demo).tags == ()
        assert [e.id for e in catalogue.episodes(tag="eval")] == [rollout]
        assert [e.id for e in catalogue.episodes(exclude_tag="eval")] == [demo]
        assert [e.id for e in catalogue.episodes(exclude_tag=["autonomous", "x"])] == [demo]
        assert [e.id for e in catalogue.episodes(status="complete", tag="autonomous")] == [rollout]
        demo_steps = read_steps(store.episode_dir(demo))

    reader = WindowReader(tmp_path, horizon=10)
    assert reader.episode_ids == [demo] and len(reader) == STEPS
    reader.close()
    everything = WindowReader(tmp_path, horizon=10, exclude_tags=())
    assert everything.episode_ids == [demo, rollout] and len(everything) == 2 * STEPS
    everything.close()
    with pytest.raises(ValueError, match="without tags eval"):
        WindowReader(tmp_path, episodes=[rollout])

    stats = compute_norm_stats(tmp_path)
    expected = NormStats.of_samples(demo_steps["qpos"])
    np.testing.assert_allclose(stats.state.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(stats.actions.mean, NormStats.of_samples(demo_steps["action"]).mean, rtol=1e-6)
    both = compute_norm_stats(tmp_path, exclude_tags=())
    assert not np.allclose(both.state.mean, stats.state.mean)

    with Store(tmp_path) as store:  # judged a good demonstration after all
        store.catalogue.set_tags(rollout, ["autonomous"])
        assert store.catalogue.episode(rollout).tags == ("autonomous",)
    assert WindowReader(tmp_path, horizon=10).episode_ids == [demo, rollout]


def test_tags_are_checked(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        session = store.catalogue.start_session(
            profile="x", profile_snapshot="", calibration={}, rig_version="test"
        )
        for bad in (["a,b"], [""], [" eval"]):
            with pytest.raises(ValueError, match="tag"):
                store.catalogue.start_episode(session, "task", 50.0, tags=bad)
        with pytest.raises(TypeError, match="sequence"):
            store.catalogue.start_episode(session, "task", 50.0, tags="eval")
        episode = store.catalogue.start_episode(session, "task", 50.0, tags=["eval", "eval", "x"])
        assert store.catalogue.episode(episode).tags == ("eval", "x")
        assert store.catalogue.episodes(tag="val") == []  # whole tags, not substrings


def test_deleting_an_episode_deletes_its_segments(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        episode = autonomous_episode(store).episode_id
        store.delete_episode(episode)
        assert store.catalogue.db.table("segments").count == 0


# ---- the catalogue's migration -------------------------------------------------------------------


def test_a_v1_catalogue_migrates_to_v2_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.db"
    old = Catalogue(path, MIGRATIONS[:1])  # as a v1 rig left it: an episode with a stream, and a run
    assert old.schema_version == 1
    session = old.start_session(profile="aloha", profile_snapshot="", calibration={"a": 1}, rig_version="0")
    with old.db.atomic():
        task = old.db.table("tasks").lookup({"text": "fold"})
        row = {"session_id": session, "task_id": task, "task": "fold", "started_at": "2024-01-01T00:00:00"}
        old.db.table("episodes").insert({**row, "rate_hz": 50.0, "status": "complete", "steps": 7})
        stream = CameraStream("cam_high", 640, 480, 50.0, "h264", "cam_high.mp4")
        old.db.table("camera_streams").insert({"episode_id": 1, **dataclasses.asdict(stream)})
    old.start_training_run({"steps": 3})
    old.close()

    catalogue = Catalogue(path)
    assert catalogue.schema_version == len(MIGRATIONS) >= 2
    (episode,) = catalogue.episodes()
    assert (episode.id, episode.task, episode.steps, episode.status) == (1, "fold", 7, "complete")
    assert episode.tags == () and episode.flags is None  # not judged: it was recorded before judging
    assert [s.camera for s in catalogue.streams(1)] == ["cam_high"]
    assert catalogue.training_runs()[0].config == {"steps": 3}
    assert catalogue.segments(1) == []
    catalogue.add_segments(1, [Segment("intervention", 2, 5)])
    catalogue.set_tags(1, ["eval"])
    assert [(s.label, s.start_step, s.end_step) for s in catalogue.segments(1)] == [("intervention", 2, 5)]
    assert catalogue.episodes(exclude_tag="eval") == []
    with pytest.raises(sqlite3.IntegrityError):  # a segment belongs to an episode that exists
        orphan = {"episode_id": 99, "label": "x", "start_step": 0, "end_step": 1}
        catalogue.db.table("segments").insert(orphan)


# ---- episodes recorded before the fields existed ---------------------------------------------------


def to_old_layout(folder: Path) -> np.ndarray:
    """Rewrite an episode's step files as a rig without `mode` and `policy_action` wrote them."""
    records = read_steps(folder)
    names = [name for name in records.dtype.names or () if name not in ("mode", "policy_action")]
    old = np.dtype([(name, records.dtype.fields[name][0]) for name in names])  # type: ignore[index]
    converted = np.zeros(len(records), old)
    for name in names:
        converted[name] = records[name]
    header = {"version": 1, "cameras": list(CAMERAS), "dtype": old.descr}
    (folder / HEADER).write_text(json.dumps(header))
    (folder / RECORDS).write_bytes(converted.tobytes())
    return converted


def test_an_episode_from_before_the_fields_still_reads_shows_and_trains(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        summary = teleop_episode(store, episode=1)
        folder = store.episode_dir(summary.episode_id)
        converted = to_old_layout(folder)
        autonomous_episode(store, episode=2)  # a new-layout episode beside it
    steps = read_steps(folder)
    assert "mode" not in (steps.dtype.names or ()) and len(steps) == STEPS
    np.testing.assert_array_equal(steps["qpos"], converted["qpos"])
    assert labeled_segments(steps) == []

    reader = WindowReader(tmp_path, horizon=20)
    assert len(reader) == 2 * STEPS
    window = reader[STEPS - 5]  # the old episode's last steps
    assert window.episode_id == summary.episode_id and window.action_is_pad.sum() == 15
    np.testing.assert_allclose(window.state, converted["qpos"][STEPS - 5])
    assert window.images["cam_high"].shape == (*SIZE, 3)
    reader.close()
    stats = compute_norm_stats(tmp_path)
    assert stats.state.dim == STATE_DIM and np.isfinite(stats.state.mean).all()

    out = io.StringIO()
    assert show_episode(tmp_path, summary.episode_id, tmp_path / "old.png", out) == 0
    assert "segment" not in out.getvalue()


# ---- browsing ------------------------------------------------------------------------------------


def test_the_listing_shows_tags_and_interventions_and_show_lists_segments(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        teleop_episode(store)
        rollout = autonomous_episode(store, tags=("eval",)).episode_id
    listing = io.StringIO()
    assert list_episodes(tmp_path, listing) == 0
    rows = [line for line in listing.getvalue().splitlines() if "transfer" in line]
    assert len(rows) == 2 and "eval; 1 interv." in rows[1] and "interv." not in rows[0]
    shown = io.StringIO()
    assert show_episode(tmp_path, rollout, tmp_path / "plot.png", shown) == 0
    text = shown.getvalue()
    assert "tags: eval" in text
    assert "segment autonomous: steps 0..30 (0.6 s)" in text
    assert "segment intervention: steps 30..60 (0.6 s)" in text
    assert "segment autonomous: steps 60..90 (0.6 s)" in text
