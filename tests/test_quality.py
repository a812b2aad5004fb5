"""Episodes that are no demonstration (the arms faulted, held or never moved): judged from their
steps, flagged in a real catalogue, shown by `rig episodes` / `rig show`, left out of training."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from synthetic_store import record_step, synthetic_step

from policy.normalize import compute_norm_stats
from recorder.catalogue import MIGRATIONS, Catalogue
from recorder.quality import describe_flags, judge_episode
from recorder.reader import WindowReader
from recorder.recorder import CameraFormat, EpisodeRecorder, EpisodeSummary
from recorder.steps import step_dtype
from recorder.store import Store
from rig.commands.episodes import list_episodes, show_episode
from rig.step import MODES, STATE_DIM, Step

RATE = 50.0
STEPS = 400
FAULT = "fault: leader_left: no reply from servo 1 on /dev/pts/3 (timeout). Holding the other arms."


def records(modes: Sequence[str], moving: bool = True, layout: np.dtype | None = None) -> np.ndarray:
    """Step records as the recorder writes them: the followers sweep 0.5 rad, or stand still."""
    out = np.zeros(len(modes), layout or step_dtype(()))
    out["index"] = np.arange(len(modes))
    out["t"] = np.arange(len(modes)) / RATE
    sweep = np.linspace(0.0, 0.5 if moving else 0.004, len(modes))
    out["qpos"] = np.tile(sweep[:, None], (1, STATE_DIM))
    if "mode" in (out.dtype.names or ()):
        out["mode"] = [MODES.index(mode) for mode in modes]
    return out


# ---- judging steps ---------------------------------------------------------------------------


def test_a_driven_episode_that_moves_is_not_flagged() -> None:
    assert judge_episode(records(["teleop"] * STEPS), ["speed: follower_left.waist held"], RATE) == {}
    assert judge_episode(records(["autonomous"] * 200 + ["intervention"] * 200), (), RATE) == {}


def test_an_episode_whose_loop_went_idle_is_flagged_with_when_and_for_how_long() -> None:
    flags = judge_episode(records(["teleop"] * 193 + ["idle"] * 207), (), RATE)
    assert list(flags) == ["idle"]
    assert "4.1 of 8.0 s" in flags["idle"] and "idle from step 193" in flags["idle"]
    assert "e-stop from step 0" in judge_episode(records(["e-stop"] * STEPS), (), RATE)["idle"]


def test_a_switch_that_lands_a_few_ticks_into_the_episode_is_no_hold() -> None:
    assert judge_episode(records(["idle"] * 3 + ["teleop"] * 397), (), RATE) == {}
    assert "idle" in judge_episode(records(["idle"] * 5 + ["teleop"] * 395), (), RATE)


def test_followers_that_never_moved_are_flagged_still() -> None:
    flags = judge_episode(records(["teleop"] * STEPS, moving=False), (), RATE)
    assert list(flags) == ["still"] and "0.004" in flags["still"]
    assert judge_episode(records([]), (), RATE) == {"still": "no steps"}


def test_fault_events_flag_the_episode_faulted_with_the_first_message() -> None:
    flags = judge_episode(records(["teleop"] * 193 + ["idle"] * 207), [FAULT, FAULT], RATE)
    assert list(flags) == ["faulted", "idle"]
    assert (
        flags["faulted"].startswith("leader_left: no reply from servo 1")
        and "(and 1 more)" in flags["faulted"]
    )
    assert describe_flags(flags).startswith("flagged faulted (leader_left")


def test_steps_recorded_before_modes_existed_are_judged_on_motion_only() -> None:
    old = np.dtype([(name, step_dtype(()).fields[name][0]) for name in ("index", "t", "qpos")])  # type: ignore[index]
    assert judge_episode(records(["idle"] * STEPS, layout=old), (), RATE) == {}
    assert list(judge_episode(records(["idle"] * STEPS, moving=False, layout=old), (), RATE)) == ["still"]


# ---- through the recorder, the catalogue, the store and training --------------------------------


def record(store: Store, make: Sequence[Step], events_at: dict[int, str] | None = None) -> EpisodeSummary:
    session = store.catalogue.start_session(profile="x", profile_snapshot="", calibration={}, rig_version="t")
    recorder = EpisodeRecorder(store, session, [CameraFormat("cam_high", 64, 48)], RATE)
    recorder.begin("transfer the cube")
    for step in make:
        event = (events_at or {}).get(step.index)
        record_step(recorder, dataclasses.replace(step, events=(event,)) if event else step)
    return recorder.end("success")


def demonstration(episode: int, steps: int = 60) -> list[Step]:
    return [synthetic_step(episode, i, ("cam_high",), (48, 64)) for i in range(steps)]


def held_after_a_fault(steps: int = 60) -> list[Step]:
    """A demonstration whose leader stopped answering at step 20: the loop held from then on."""
    moving = demonstration(1, steps)
    return [
        step if i < 20 else dataclasses.replace(step, mode="idle", qpos=moving[20].qpos)
        for i, step in enumerate(moving)
    ]


def standing_still(steps: int = 60) -> list[Step]:
    return [
        dataclasses.replace(step, qpos=np.zeros(STATE_DIM, np.float32)) for step in demonstration(2, steps)
    ]


def test_flags_reach_the_summary_the_catalogue_and_the_listing(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        good = record(store, demonstration(0))
        faulted = record(store, held_after_a_fault(), events_at={20: FAULT})
        still = record(store, standing_still())
        catalogue = store.catalogue
        assert good.flags == {} and catalogue.episode(good.episode_id).flags == {}
        assert list(faulted.flags) == ["faulted", "idle"] and "flagged faulted" in faulted.describe()
        assert catalogue.episode(faulted.episode_id).flags == dict(faulted.flags)
        assert list(catalogue.episode(still.episode_id).flags or {}) == ["still"]
        assert [e.id for e in catalogue.episodes(flagged=True)] == [faulted.episode_id, still.episode_id]
        assert [e.id for e in catalogue.episodes(flagged=False)] == [good.episode_id]
    listing = io.StringIO()
    list_episodes(tmp_path, listing)
    assert "faulted, idle" in listing.getvalue() and "still" in listing.getvalue()
    shown = io.StringIO()
    show_episode(tmp_path, faulted.episode_id, tmp_path / "plot.png", shown)
    assert "  flagged (training leaves it out" in shown.getvalue()
    assert "    faulted: leader_left: no reply" in shown.getvalue()
    assert "    idle: not driven for 0.8 of 1.2 s" in shown.getvalue()


def test_training_leaves_flagged_episodes_out_unless_asked(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        good = record(store, demonstration(0)).episode_id
        held = record(store, held_after_a_fault()).episode_id
    reader = WindowReader(tmp_path, horizon=10)
    assert reader.episode_ids == [good]
    reader.close()
    everything = WindowReader(tmp_path, horizon=10, include_flagged=True)
    assert everything.episode_ids == [good, held]
    everything.close()
    only_good = compute_norm_stats(tmp_path)
    both = compute_norm_stats(tmp_path, include_flagged=True)
    assert not np.allclose(only_good.state.mean, both.state.mean)
    with pytest.raises(ValueError, match=r"1 flagged .*--include-flagged"):
        WindowReader(tmp_path, episodes=[held])


def test_a_catalogue_from_before_judging_migrates_and_its_episodes_are_judged_on_a_locked_open(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        good = record(store, demonstration(0)).episode_id
        still = record(store, standing_still()).episode_id
    catalogue = Catalogue(tmp_path / "catalogue.db")  # back to what a rig before v3 left: no flags
    catalogue.db.table("episodes").transform(drop={"flags"})
    catalogue.db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    catalogue.close()
    reading = Store(tmp_path, create=False, lock=False)  # readers beside a recorder change nothing
    assert [e.flags for e in reading.catalogue.episodes()] == [None, None]
    assert [e.id for e in reading.catalogue.training_episodes()] == [good, still]  # not judged: kept
    reading.close()
    with Store(tmp_path) as store:
        assert store.catalogue.episode(good).flags == {}
        assert list(store.catalogue.episode(still).flags or {}) == ["still"]
        assert [e.id for e in store.catalogue.training_episodes()] == [good]
