"""Episode queries and replay, for `rig episodes`/`show`/`replay` and the terminal app's Episodes
screen: how an episode's labels and flags read, its recorded actions, and driving the followers
through them on a running loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recorder.catalogue import EpisodeRecord, SegmentRecord
from recorder.steps import read_steps
from recorder.store import Store
from rig.loop import ControlLoop
from rig.modes import RAMPS, Mode, MoveTo, Replay
from rig.step import Step


def episode_labels(episode: EpisodeRecord, segments: list[SegmentRecord]) -> str:
    """Tags and the count of intervention segments in one cell: `autonomous; 2 interv.`."""
    interventions = sum(s.label == "intervention" for s in segments)
    parts = [", ".join(episode.tags)] if episode.tags else []
    parts += [f"{interventions} interv."] if interventions else []
    return "; ".join(parts) or "-"


def episode_twin_reward(episode: EpisodeRecord) -> str:
    """`twin reward 3/4` for an episode the twin judged (out of the twin's reward for the whole task),
    or "" for one it did not. Asks the twin only then, since loading it loads MuJoCo."""
    if episode.twin_reward is None:
        return ""
    from hardware.sim.world import World

    return f"twin reward {episode.twin_reward}/{World.max_reward}"


def episode_flags(episode: EpisodeRecord) -> str:
    """The quality flags (training leaves flagged episodes out); `?` for an episode never judged."""
    if episode.flags is None:
        return "?"
    return ", ".join(episode.flags) or "-"


def episode_actions(store: Store, episode_id: int) -> np.ndarray:
    """The episode's recorded follower goals, (T, 14) float64."""
    store.catalogue.episode(episode_id)  # an unknown id says so, before its missing files would
    return read_steps(store.episode_dir(episode_id))["action"].astype(np.float64)


def replay_actions(
    loop: ControlLoop, actions: np.ndarray, move_s: float = RAMPS.replay_move_s
) -> Step | None:
    """Move to the first action over `move_s`, then play one action per tick. Returns the last step,
    or None when something else took the loop first (an e-stop, another mode, the loop stopping)."""
    move = MoveTo(actions[0], duration=move_s)
    if _drive(loop, move, lambda: move.finished) is None:
        return None
    replay = Replay(actions)
    return _drive(loop, replay, lambda: replay.finished)


def _drive(loop: ControlLoop, mode: Mode, done: Callable[[], bool], switch_ticks: int = 10) -> Step | None:
    """Run `mode` until `done()`; None when it did not take over within `switch_ticks` or lost the loop."""
    loop.set_mode(mode, ramp_s=0.0)
    step = loop.wait_for_step()
    first = step.index
    while loop.mode is not mode:  # the switch happens at a tick boundary
        if step.index - first > switch_ticks or not loop.running:
            return None
        step = loop.wait_for_step(step.index)
    while not done():
        if loop.mode is not mode or not loop.running:
            return None
        step = loop.wait_for_step(step.index)
    return step
