"""`rig record`'s session on the twin when the arms trip mid-session: the trip is flagged in the
episode, the next reset engages teleop again and says so, and with `successful_only` a failed or
flagged demonstration is discarded and recorded again, a bounded number of times."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware.devices import open_devices
from hardware.profile import load_profile
from recorder.steps import read_steps
from recorder.store import Store
from rig.app.record import RecordingSession as Session
from rig.app.record import RecordPlan, record_episodes
from rig.calibration import default_calibrations
from rig.step import MODES, Step

TASK = "transfer the cube"
SHORT = RecordPlan(TASK, episodes=2, episode_s=1.5, reset_s=0.5, countdown_s=0.5)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """A record session on the twin, without cameras."""
    profile = dataclasses.replace(load_profile("aloha-sim"), cameras={})
    with open_devices(profile) as devices, Store(tmp_path / "store") as store:
        started = Session(devices, store, default_calibrations(profile))
        started.loop.start()
        try:
            yield started
        finally:
            started.loop.stop()


class Outage:
    """The left leader's waist servo stops answering 20 ticks into the first episode, for 30 ticks."""

    def __init__(self, session: Session, after: int = 20, ticks: int = 30) -> None:
        assert session.devices.twin is not None
        self.chain = session.devices.twin.chains["leader_left"]
        self.recorder = session.recorder
        self.after, self.ticks, self.seen = after, ticks, 0
        session.loop.subscribe(self)

    def __call__(self, step: Step) -> None:
        if not self.recorder.recording or self.seen > self.after + self.ticks:
            return
        self.seen += 1
        if self.seen == self.after:
            self.chain.drop(1)
        elif self.seen > self.after + self.ticks:
            self.chain.drop(1, dropped=False)


def test_a_trip_is_flagged_and_the_next_reset_engages_teleop_again(session: Session) -> None:
    Outage(session)
    said: list[str] = []
    result = record_episodes(session, SHORT, said.append)
    first, second = result.kept
    assert list(first.flags) == ["faulted", "idle"] and "idle from step 2" in first.flags["idle"]
    engaged = [line for line in said if "teleop engaged again" in line]
    assert len(engaged) == 1 and "the arms were idle after fault: leader_left" in engaged[0]
    assert second.flags == {}
    catalogue = session.recorder.store.catalogue
    modes = read_steps(session.recorder.store.episode_dir(second.episode_id))["mode"]
    assert set(modes.tolist()) == {MODES.index("teleop")}
    assert [e.id for e in catalogue.training_episodes()] == [second.episode_id]
    assert "1 flagged (training leaves them out" in result.describe(Path("store"))


def test_successful_only_discards_a_flagged_demonstration_and_records_it_again(session: Session) -> None:
    Outage(session)
    plan = RecordPlan(TASK, episodes=1, episode_s=None, reset_s=0.5, countdown_s=0.5, successful_only=True)
    said: list[str] = []
    result = record_episodes(session, plan, said.append)
    assert result.gave_up is None and result.discarded == ["flagged faulted, idle"]
    (kept,) = result.kept
    assert kept.outcome == "success" and kept.flags == {}
    assert any(
        line.startswith("discarded episode 1 (flagged faulted, idle); recording episode 1 again")
        for line in said
    )
    assert [e.id for e in session.recorder.store.catalogue.episodes()] == [kept.episode_id]
    assert result.describe(Path("store")).endswith(
        "1 marked successful; 1 discarded (1 flagged faulted, idle)"
    )


def test_successful_only_gives_up_after_its_retries_and_says_why(session: Session) -> None:
    plan = RecordPlan(
        TASK, episodes=1, episode_s=1.0, reset_s=0.5, countdown_s=0.5, successful_only=True, retries=1
    )
    result = record_episodes(session, plan, lambda line: None)  # one second is no demonstration: failures
    assert result.kept == [] and result.discarded == ["failure", "failure"]
    assert (
        result.gave_up is not None
        and "episode 1/1 was no successful demonstration in 2 tries" in result.gave_up
    )
    assert session.recorder.store.catalogue.episodes() == []
