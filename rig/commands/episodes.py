"""Browsing a store: `rig episodes`, `rig show`, `rig delete`, `rig replay`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from recorder.steps import read_steps
from recorder.store import Store
from rig.app.episodes import (
    episode_actions,
    episode_flags,
    episode_labels,
    episode_twin_reward,
    replay_actions,
)


def list_episodes(store_dir: Path, out: TextIO) -> int:
    from rich.console import Console
    from rich.table import Table

    store = Store(store_dir, create=False, lock=False)
    table = Table(title=f"episodes in {store.root}")
    columns = (
        "id",
        "task",
        "steps",
        "seconds",
        "status",
        "outcome",
        "tags",
        "flags",
        "cameras",
        "dropped",
        "MB",
    )
    for column in columns:
        table.add_column(column)
    for episode in store.catalogue.episodes():
        cameras = ", ".join(s.camera for s in store.catalogue.streams(episode.id))
        dropped = sum((episode.frames_dropped or {}).values())
        table.add_row(
            str(episode.id),
            episode.task,
            str(episode.steps or 0),
            f"{episode.duration_s or 0:.1f}",
            episode.status,
            episode.outcome or "-",
            episode_labels(episode, store.catalogue.segments(episode.id)),
            episode_flags(episode),
            cameras,
            str(dropped),
            f"{store.episode_size(episode.id) / 1e6:.1f}",
        )
    Console(file=out, width=140).print(table)
    return 0


def show_episode(store_dir: Path, episode_id: int, png: Path | None, out: TextIO) -> int:
    """A summary, and the joint trajectories (follower qpos and action) plotted to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = Store(store_dir, create=False, lock=False)
    episode = store.catalogue.episode(episode_id)
    steps = read_steps(store.episode_dir(episode_id))
    print(
        f"episode {episode.id}: {episode.task!r}, {len(steps)} steps ({episode.duration_s or 0:.1f} s), "
        f"{episode.status}, outcome {episode.outcome or 'unknown'}"
        + (f", {episode_twin_reward(episode)}" if episode.twin_reward is not None else ""),
        file=out,
    )
    if len(steps) != episode.steps:
        print(
            f"  warning: {len(steps)} steps on disk, the catalogue says {episode.steps} were recorded: "
            "the step file was damaged after recording",
            file=out,
        )
    for stream in store.catalogue.streams(episode_id):
        print(
            f"  {stream.camera}: {stream.width}x{stream.height} @ {stream.fps:g} fps {stream.codec}, "
            f"{stream.frames_written} frames written, {stream.frames_dropped} dropped",
            file=out,
        )
    if episode.tags:
        print(f"  tags: {', '.join(episode.tags)}", file=out)
    if episode.flags:
        print("  flagged (training leaves it out unless `rig train --include-flagged`):", file=out)
        for flag, why in episode.flags.items():
            print(f"    {flag}: {why}", file=out)
    segments = store.catalogue.segments(episode_id)
    for segment in segments:
        seconds = segment.steps / episode.rate_hz
        print(
            f"  segment {segment.label}: steps {segment.start_step}..{segment.end_step} ({seconds:.1f} s)",
            file=out,
        )
    if episode.notes:
        print(f"  notes: {episode.notes}", file=out)
    png = png or Path(f"episode-{episode_id}.png")
    t = steps["t"] - steps["t"][0] if len(steps) else np.zeros(0)
    figure, axes = plt.subplots(7, 2, figsize=(12, 14), sharex=True)
    names = ["waist", "shoulder", "elbow", "forearm roll", "wrist angle", "wrist rotate", "gripper (0..1)"]
    for arm, column in (("left", 0), ("right", 1)):
        for joint, name in enumerate(names):
            axis = axes[joint, column]
            i = column * 7 + joint
            axis.plot(t, steps["qpos"][:, i], label="follower")
            axis.plot(t, steps["action"][:, i], label="action", linestyle="--")
            axis.set_ylabel(f"{arm} {name}", fontsize=8)
            for segment in segments:
                if segment.label == "intervention" and segment.end_step <= len(t):
                    axis.axvspan(t[segment.start_step], t[segment.end_step - 1], color="orange", alpha=0.2)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel("s")
    axes[-1, 1].set_xlabel("s")
    figure.suptitle(f"episode {episode_id}: {episode.task}")
    figure.tight_layout()
    figure.savefig(png, dpi=80)
    plt.close(figure)
    print(f"  plot: {png}", file=out)
    return 0


def save_video(store_dir: Path, episode_id: int, camera: str, target: Path | None, out: TextIO) -> int:
    """A copy of the episode's video from `camera` (H.264 MP4: any player opens it)."""
    import shutil

    store = Store(store_dir, create=False, lock=False)
    streams = {s.camera: s for s in store.catalogue.streams(episode_id)}  # an unknown id says so
    if camera not in streams:
        known = ", ".join(streams) or "none"
        print(
            f"rig show: episode {episode_id} has no camera {camera!r}; its cameras: {known}", file=sys.stderr
        )
        return 1
    source = store.episode_dir(episode_id) / streams[camera].file
    if not source.exists():
        print(f"rig show: {source} is missing (the video was lost after recording)", file=sys.stderr)
        return 1
    target = target or Path(f"episode-{episode_id}-{camera}{source.suffix}")
    shutil.copyfile(source, target)
    print(f"  video {camera}: {target} ({streams[camera].frames_written} frames)", file=out)
    return 0


def mark_episode(store_dir: Path, episode_id: int, outcome: str | None, note: str | None, out: TextIO) -> int:
    """The operator's verdict and notes, after the fact."""
    with Store(store_dir, create=False) as store:
        store.catalogue.episode(episode_id)  # KeyError for an unknown id, before anything changes
        if outcome is not None:
            store.catalogue.set_outcome(episode_id, outcome)
        if note is not None:
            store.catalogue.set_notes(episode_id, note)
    print(
        f"episode {episode_id}: outcome {outcome or 'unchanged'}, notes {'set' if note else 'unchanged'}",
        file=out,
    )
    return 0


def delete_episode(
    store_dir: Path, episode_id: int, yes: bool, out: TextIO, answers: TextIO = sys.stdin
) -> int:
    with Store(store_dir, create=False) as store:
        episode = store.catalogue.episode(episode_id)
        if not yes:
            print(
                f"delete episode {episode_id} ({episode.task!r}, {episode.steps} steps)? [y/N] ",
                end="",
                file=out,
                flush=True,
            )
            if answers.readline().strip().lower() not in ("y", "yes"):
                print("kept", file=out)
                return 1
        store.delete_episode(episode_id)
    print(f"deleted episode {episode_id}", file=out)
    return 0


def rebuild_catalogue(store_dir: Path, out: TextIO) -> int:
    """A new catalogue from the episode folders (the old one is kept beside it)."""
    from recorder.rebuild import rebuild_catalogue as rebuild

    print(rebuild(store_dir).describe(), file=out)
    return 0


def replay_episode(profile_name: str, store_dir: Path, episode_id: int, out: TextIO) -> int:
    """Drive the followers through the recorded actions: first slowly to where the episode began."""
    from hardware.devices import open_devices
    from hardware.profile import load_profile
    from rig.loop import ControlLoop, LoopConfig
    from rig.teleop import load_calibrations

    store = Store(store_dir, create=False, lock=False)
    actions = episode_actions(store, episode_id)
    if not len(actions):
        print(f"rig replay: episode {episode_id} has no steps", file=sys.stderr)
        return 1
    profile = load_profile(profile_name)
    with open_devices(profile) as devices:
        loop = ControlLoop(devices, load_calibrations(devices), LoopConfig(cameras=False))
        loop.start()
        step = replay_actions(loop, actions)
        loop.stop()
    error = np.abs(step.qpos - actions[-1]).max() if step is not None else float("nan")
    print(f"replayed episode {episode_id}: {len(actions)} actions; final joint error {error:.3f}", file=out)
    return 0
