"""Export to and import from LeRobot datasets (v3.0), on a small synthetic store whose frames carry
their step index painted in, so that lossy video can still be checked frame by frame."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from recorder.catalogue import CameraStream
from recorder.lerobot import (
    JOINT_NAMES,
    ExportSettings,
    LeRobotFormatError,
    export_lerobot,
    import_lerobot,
)
from recorder.steps import StepWriter, read_steps, to_record
from recorder.store import Store
from recorder.video import VideoReader, VideoWriter
from rig.step import CameraSample, Step

FPS = 50
CAMERAS = {"cam_high": 40, "cam_left_wrist": 200}  # camera -> background shade
HEIGHT, WIDTH = 96, 128
TASKS = ("transfer the cube", "insert the peg")
DROPPED = ("cam_left_wrist", 1, 10)  # (camera, episode, step): a frame the recorder never got


def painted(index: int, shade: int) -> np.ndarray:
    """A frame with `index` written as 8 black/white blocks across the top, on a camera's shade."""
    image = np.full((HEIGHT, WIDTH, 3), shade, np.uint8)
    image[HEIGHT // 2 :, :, 0] = 255 - shade  # a second colour, so channels differ
    for bit in range(8):
        image[8:40, bit * 16 : (bit + 1) * 16] = 255 if (index >> bit) & 1 else 0
    return image


def painted_index(image: np.ndarray) -> int:
    return sum(1 << bit for bit in range(8) if image[12:36, bit * 16 + 3 : bit * 16 + 13].mean() > 128)


def record_episode(
    store: Store, session: int, task: str, steps: int, seed: int, status: str = "complete"
) -> int:
    """An episode as the recorder writes it: steps with jittered times, and a video per camera."""
    streams = [CameraStream(name, WIDTH, HEIGHT, FPS, "libx264", f"{name}.mp4") for name in CAMERAS]
    episode_id = store.catalogue.start_episode(session, task, FPS, streams)
    folder = store.new_episode_dir(episode_id)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 14)
    writers = {name: VideoWriter(folder / f"{name}.mp4", WIDTH, HEIGHT, FPS) for name in CAMERAS}
    dropped = dict.fromkeys(CAMERAS, 0)
    queued = dict.fromkeys(CAMERAS, 0)
    with StepWriter(folder, list(CAMERAS)) as steps_file:
        for k in range(steps):
            t = 1000.0 + seed + k / FPS + rng.uniform(-0.002, 0.002)
            qpos = np.sin(phase + k / 20).astype(np.float32)
            samples = {}
            for name, shade in CAMERAS.items():
                if (name, seed, k) == DROPPED:
                    dropped[name] += 1
                    continue
                image = painted(k, shade)
                writers[name].write(image)
                samples[name] = CameraSample(image, t * 1000 - 5, 1000 + k, 0.005)
            step = Step(
                index=k,
                t=t,
                qpos=qpos,
                qvel=np.cos(phase + k / 20).astype(np.float32),
                effort=rng.normal(0, 100, 14).astype(np.float32),
                action=qpos + np.float32(0.01),
                leader=qpos + np.float32(0.02),
                mode="teleop",
                cameras=samples,
            )
            record = to_record(step, steps_file.dtype)
            for name in samples:  # as the recorder notes where each frame went in the video
                record[f"{name}/video_index"] = queued[name]
                queued[name] += 1
            steps_file.append(record)
    for name, writer in writers.items():
        writer.close()
        store.catalogue.update_stream(episode_id, name, writer.frames_written, dropped[name])
    store.catalogue.finish_episode(
        episode_id, steps=steps, duration_s=steps / FPS, status=status, frames_dropped=dropped
    )
    return episode_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Two complete episodes (one with a dropped frame) and an interrupted one."""
    with Store(tmp_path_factory.mktemp("store")) as store:
        session = store.catalogue.start_session(
            profile="aloha-sim", profile_snapshot="", calibration={}, rig_version="0.1.0"
        )
        record_episode(store, session, TASKS[0], 60, seed=0)
        record_episode(store, session, TASKS[1], 64, seed=1)
        record_episode(store, session, TASKS[0], 30, seed=2, status="interrupted")
        yield store


@pytest.fixture(scope="module")
def exported(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "rig_dataset"
    summary = export_lerobot(store, out, repo_id="local/rig_test")
    assert summary.episodes == {1: 0, 2: 1}
    assert summary.frames == 124 and summary.frames_filled == {"cam_high": 0, "cam_left_wrist": 1}
    assert "missing frames" in summary.describe() and "timestamps='grid'" in summary.describe()
    return out


@pytest.fixture(scope="module")
def grid_exported(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same episodes with timestamps frame_index / fps, which LeRobot's torchcodec backend needs."""
    out = tmp_path_factory.mktemp("export") / "rig_grid"
    summary = export_lerobot(store, out, repo_id="local/rig_test", settings=ExportSettings(timestamps="grid"))
    assert summary.max_jitter_s < 1e-5 and "timestamps" not in summary.describe()
    return out


def test_export_writes_the_v3_layout_and_metadata(exported: Path) -> None:
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "aloha" and info["fps"] == FPS
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (2, 124, 2)
    assert info["splits"] == {"train": "0:2"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert features["observation.state"] == {"dtype": "float32", "shape": [14], "names": list(JOINT_NAMES)}
    assert JOINT_NAMES[0] == "left_waist" and JOINT_NAMES[13] == "right_gripper"
    camera = features["observation.images.cam_high"]
    assert camera["dtype"] == "video" and camera["shape"] == [HEIGHT, WIDTH, 3]
    assert camera["info"]["video.codec"] == "h264" and camera["info"]["video.fps"] == FPS
    assert {"action", "observation.velocity", "observation.effort", "timestamp", "index"} <= set(features)

    tasks = pq.read_table(exported / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "__index_level_0__": list(TASKS)}

    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [60, 64] and [e["tasks"] for e in episodes] == [
        [t] for t in TASKS
    ]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 60), (60, 124)]
    key = "videos/observation.images.cam_high"
    assert episodes[0][f"{key}/from_timestamp"] == 0.0
    assert episodes[1][f"{key}/from_timestamp"] == episodes[0][f"{key}/to_timestamp"]
    assert episodes[0]["stats/observation.images.cam_high/mean"][0] == [
        pytest.approx(episodes[0]["stats/observation.images.cam_high/mean"][0][0])
    ]  # (3, 1, 1), per channel
    assert len(episodes[0]["stats/action/q99"]) == 14 and episodes[0]["stats/action/count"] == [60]

    stats = json.loads((exported / "meta/stats.json").read_text())
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert stats["action"]["count"] == [124] and stats["observation.images.cam_high"]["count"][0] > 100
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    actions = np.array(data.column("action").to_pylist())
    assert np.allclose(stats["action"]["mean"], actions.mean(axis=0), atol=1e-6)
    assert np.allclose(stats["action"]["std"], actions.std(axis=0), atol=1e-6)
    assert np.array(stats["observation.images.cam_high"]["max"]).shape == (3, 1, 1)


def test_exported_rows_carry_the_recorded_steps_and_times(store: Store, exported: Path) -> None:
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet").to_pydict()
    assert data["index"] == list(range(124)) and data["episode_index"] == [0] * 60 + [1] * 64
    assert data["task_index"] == [0] * 60 + [1] * 64 and data["frame_index"][60:] == list(range(64))
    steps = read_steps(store.episode_dir(2))
    assert np.array_equal(np.array(data["observation.state"][60:], np.float32), steps["qpos"])
    assert np.array_equal(np.array(data["action"][60:], np.float32), steps["action"])
    assert np.array_equal(np.array(data["observation.effort"][60:], np.float32), steps["effort"])
    timestamps = np.array(data["timestamp"][60:])
    assert timestamps[0] == 0.0 and np.allclose(timestamps, steps["t"] - steps["t"][0], atol=2e-5)
    assert not np.allclose(timestamps, np.arange(64) / FPS, atol=1e-4)  # real times, not k / fps


def test_every_exported_frame_sits_at_its_row_time(exported: Path) -> None:
    """LeRobot finds a row's frame at from_timestamp + timestamp, within 1e-4 s."""
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet").to_pydict()
    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for camera, shade in CAMERAS.items():
        key = f"observation.images.{camera}"
        with av.open(str(exported / f"videos/{key}/chunk-000/file-000.mp4")) as container:
            stream = container.streams.video[0]
            decoded = [(f.time, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        assert len(decoded) == 124
        times = np.array([t for t, _ in decoded])
        for row in range(124):
            episode = episodes[data["episode_index"][row]]
            want = episode[f"videos/{key}/from_timestamp"] + data["timestamp"][row]
            nearest = int(np.argmin(np.abs(times - want)))
            assert abs(times[nearest] - want) < 1e-4
            frame = decoded[nearest][1]
            k = data["frame_index"][row]
            shown = 9 if (camera, data["episode_index"][row], k) == DROPPED else k
            assert painted_index(frame) == shown
            assert np.abs(frame.astype(int) - painted(shown, shade)).mean() < 4


def test_grid_timestamps_are_frame_index_over_fps(grid_exported: Path) -> None:
    data = pq.read_table(grid_exported / "data/chunk-000/file-000.parquet").to_pydict()
    assert np.allclose(data["timestamp"], np.array(data["frame_index"]) / FPS, atol=1e-6)
    with av.open(
        str(grid_exported / "videos/observation.images.cam_high/chunk-000/file-000.mp4")
    ) as container:
        stream = container.streams.video[0]
        times = [f.time for f in container.decode(stream)]
    assert np.allclose(times, np.arange(124) / FPS, atol=1e-6)


def test_export_refuses_a_folder_that_is_not_empty(store: Store, tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_lerobot(store, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_interrupted_episodes_only_on_request(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"interrupted.*include_interrupted"):
        export_lerobot(store, tmp_path / "a", episodes=[3])
    summary = export_lerobot(store, tmp_path / "b", episodes=[3, 1], include_interrupted=True)
    assert summary.episodes == {3: 0, 1: 1} and summary.frames == 90
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left


def test_import_gives_back_the_recorded_episodes(store: Store, exported: Path, tmp_path: Path) -> None:
    with Store(tmp_path / "other") as other:
        summary = import_lerobot(other, exported)
        assert summary.episodes == {0: 1, 1: 2} and summary.frames == 124 and summary.tasks == TASKS
        assert summary.zero_filled == ()
        for source, target in ((1, 1), (2, 2)):
            record = other.catalogue.episode(target)
            assert record.status == "complete" and record.task == store.catalogue.episode(source).task
            assert [s.camera for s in other.catalogue.streams(target)] == list(CAMERAS)
            before, after = read_steps(store.episode_dir(source)), read_steps(other.episode_dir(target))
            for name in ("qpos", "action", "qvel", "effort"):
                assert np.array_equal(before[name], after[name]), name
            assert np.allclose(after["t"], before["t"] - before["t"][0], atol=2e-5)
            assert np.isnan(after["leader"]).all()
            for camera in CAMERAS:  # every step has its own frame now
                assert after[f"{camera}/video_index"].tolist() == list(range(len(after)))
            for camera, shade in CAMERAS.items():
                with VideoReader(other.episode_dir(target) / f"{camera}.mp4") as video:
                    frames = list(video)
                assert len(frames) == len(before)
                for k, frame in enumerate(frames):
                    shown = 9 if (camera, source - 1, k) == DROPPED else k
                    assert painted_index(frame) == shown
                    assert np.abs(frame.astype(int) - painted(shown, shade)).mean() < 6


def test_small_file_limits_split_data_and_videos_across_files(store: Store, tmp_path: Path) -> None:
    settings = ExportSettings(data_file_mb=1e-6, video_file_mb=1e-6)
    export_lerobot(store, tmp_path / "split", settings=settings)
    assert sorted(p.name for p in (tmp_path / "split/data/chunk-000").iterdir()) == [
        "file-000.parquet",
        "file-001.parquet",
    ]
    episodes = pq.read_table(tmp_path / "split/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    key = "videos/observation.images.cam_high"
    assert [(e[f"{key}/file_index"], e[f"{key}/from_timestamp"]) for e in episodes] == [(0, 0.0), (1, 0.0)]
    with Store(tmp_path / "other") as other:
        summary = import_lerobot(other, tmp_path / "split", task="one task", episodes=[1])
        assert summary.episodes == {1: 1} and other.catalogue.episode(1).task == "one task"
        assert np.array_equal(
            read_steps(other.episode_dir(1))["qpos"], read_steps(store.episode_dir(2))["qpos"]
        )


def test_import_explains_a_v2_dataset_and_a_missing_file(exported: Path, tmp_path: Path) -> None:
    old = tmp_path / "aloha_sim_insertion_human"
    (old / "meta").mkdir(parents=True)
    (old / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 50, "features": {}}))
    with Store(tmp_path / "store") as store:
        with pytest.raises(LeRobotFormatError, match=r"v2\.1 dataset.*convert_dataset_v21_to_v30"):
            import_lerobot(store, old)
        with pytest.raises(FileNotFoundError, match="not a LeRobot dataset"):
            import_lerobot(store, tmp_path / "store")
        broken = tmp_path / "broken"
        broken.mkdir()
        for path in exported.rglob("*"):
            if path.is_file() and "cam_left_wrist" not in str(path):
                target = broken / path.relative_to(exported)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
        with pytest.raises(FileNotFoundError, match=r"cam_left_wrist/chunk-000/file-000.mp4: missing"):
            import_lerobot(store, broken)
        assert store.catalogue.episodes() == []  # nothing half-imported


def test_an_import_of_a_dataset_without_velocity_and_effort_fills_zeros(
    exported: Path, tmp_path: Path
) -> None:
    lean = tmp_path / "lean"
    for path in exported.rglob("*"):
        if path.is_file():
            target = lean / path.relative_to(exported)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    info = json.loads((lean / "meta/info.json").read_text())
    del info["features"]["observation.velocity"], info["features"]["observation.effort"]
    (lean / "meta/info.json").write_text(json.dumps(info))
    data = lean / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(data).drop_columns(["observation.velocity", "observation.effort"]), data)
    with Store(tmp_path / "store") as store:
        summary = import_lerobot(store, lean, episodes=[0])
        assert summary.zero_filled == ("observation.velocity", "observation.effort")
        steps = read_steps(store.episode_dir(1))
        assert not steps["qvel"].any() and not steps["effort"].any() and steps["qpos"].any()


# ---- the real check: LeRobot's own dataset class reads the export -----------------------------------


@pytest.fixture
def lerobot_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type:
    """LeRobotDataset, offline. lerobot imports torchvision at module level (for PIL transforms and
    its pyav backend, neither used when torchcodec decodes the videos); where torchvision cannot load
    beside this torch, a bare stand-in module lets the import go through."""
    if importlib.util.find_spec("lerobot") is None:
        pytest.skip("lerobot is not installed (it is not one of rig's dependencies)")
    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed: lerobot would decode videos through torchvision")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    try:
        import torchvision  # noqa: F401
    except Exception:
        stand_ins = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms")}
        for name, module in stand_ins.items():  # removed again after the test
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            monkeypatch.setitem(sys.modules, name, module)
        stand_ins["torchvision"].transforms = stand_ins["torchvision.transforms"]  # type: ignore[attr-defined]
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except Exception as error:  # a dependency missing or not loadable here
        pytest.skip(f"lerobot's dataset class does not import here: {error!r}")
    return LeRobotDataset


def test_lerobot_loads_the_export(store: Store, grid_exported: Path, lerobot_dataset: type) -> None:
    dataset = lerobot_dataset("local/rig_test", root=grid_exported, video_backend="torchcodec")
    assert len(dataset) == 124 and dataset.num_episodes == 2 and dataset.fps == FPS
    assert dataset.meta.camera_keys == [f"observation.images.{name}" for name in CAMERAS]
    steps = {0: read_steps(store.episode_dir(1)), 1: read_steps(store.episode_dir(2))}
    for index in range(len(dataset)):
        item = dataset[index]
        episode, k = int(item["episode_index"]), int(item["frame_index"])
        assert np.array_equal(item["action"].numpy(), steps[episode]["action"][k])
        assert np.array_equal(item["observation.state"].numpy(), steps[episode]["qpos"][k])
        assert item["task"] == TASKS[episode]
        for camera, shade in CAMERAS.items():
            image = item[f"observation.images.{camera}"]  # (3, h, w) float in 0..1
            frame = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            shown = 9 if (camera, episode, k) == DROPPED else k
            assert painted_index(frame) == shown
            assert np.abs(frame.astype(int) - painted(shown, shade)).mean() < 4
    chunked = lerobot_dataset(
        "local/rig_test",
        root=grid_exported,
        video_backend="torchcodec",
        delta_timestamps={"action": [0.0, 0.02]},
    )
    assert chunked[59]["action_is_pad"].tolist() == [False, True]


def test_import_reads_a_dataset_written_by_lerobot(lerobot_dataset: type, tmp_path: Path) -> None:
    """LeRobot's own writer, with the AV1 video its published datasets use."""
    motors = {"motors": [f"motor_{i}" for i in range(14)]}  # the names of LeRobot's ported ALOHA datasets
    features = {
        "observation.state": {"dtype": "float32", "shape": (14,), "names": motors},
        "action": {"dtype": "float32", "shape": (14,), "names": motors},
        "observation.images.top": {
            "dtype": "video",
            "shape": (HEIGHT, WIDTH, 3),
            "names": ["height", "width", "channel"],
        },
    }
    written = lerobot_dataset.create(  # type: ignore[attr-defined]
        "lerobot/test_aloha", fps=FPS, features=features, root=tmp_path / "dataset", vcodec="libsvtav1"
    )
    for episode in range(2):
        for k in range(30):
            state = np.full(14, 100 * episode + k, np.float32)
            frame = {"observation.state": state, "action": state + 0.5, "task": TASKS[episode]}
            written.add_frame({**frame, "observation.images.top": painted(k, 40)})
        written.save_episode()
    written.finalize()
    with Store(tmp_path / "store") as store:
        summary = import_lerobot(store, tmp_path / "dataset")
        assert summary.episodes == {0: 1, 1: 2} and summary.cameras == ("top",) and summary.tasks == TASKS
        steps = read_steps(store.episode_dir(2))
        assert np.array_equal(steps["qpos"][:, 0], 100 + np.arange(30)) and np.allclose(
            steps["t"], np.arange(30) / FPS
        )
        with VideoReader(store.episode_dir(2) / "top.mp4") as video:
            frames = list(video)
        assert [painted_index(frame) for frame in frames] == list(range(30))
        assert max(np.abs(frame.astype(int) - painted(k, 40)).mean() for k, frame in enumerate(frames)) < 6


def test_steps_of_an_older_layout_map_frames_in_step_order() -> None:
    """Without `<camera>/video_index`, the k-th step that saw a frame has the k-th video frame."""
    from recorder.lerobot_export import _video_indices

    steps = np.array([(5,), (-1,), (7,), (8,)], np.dtype([("cam/frame_number", "<i8")]))
    indices, missing = _video_indices(steps, "cam", frames=3)
    assert indices.tolist() == [0, 0, 1, 2] and missing == 1
