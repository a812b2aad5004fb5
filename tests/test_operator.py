"""The scripted operator: demonstrations planned in the end-effector scene and played on the
twin's leaders. (That a follower copying them through the loop does the task: tests/test_teleop.py
and `rig bench teleop`.)"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import pytest

from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.control_table import CENTER_TICK, TICKS_PER_REV
from hardware.profile import Profile, load_profile
from hardware.sim.twin import Twin
from hardware.sim.world import ARM_JOINTS, START_POSE, TASKS, World
from rig.operator import ROLL_JOINTS, ROW, Demonstration, ScriptedOperator, plan_demonstration, run_plan

T = TypeVar("T")

# ------------------------------------------------------------------------------- helpers


def sim_profile(task: str = "transfer_cube") -> Profile:
    """aloha-sim without cameras (nothing here looks), on `task`."""
    profile = load_profile("aloha-sim")
    assert profile.twin is not None
    twin_spec = dataclasses.replace(profile.twin, task=task)  # type: ignore[arg-type]
    return dataclasses.replace(profile, cameras={}, twin=twin_spec)


def radians(tick: int) -> float:
    return (tick - CENTER_TICK) * 2 * math.pi / TICKS_PER_REV


# --------------------------------------------------------------------------------- tests


def test_demonstration_interpolates_and_holds_at_the_ends() -> None:
    leader = np.stack([np.zeros(14), np.ones(14), 3 * np.ones(14)])
    demo = Demonstration("transfer_cube", leader, dt=0.02)
    assert demo.duration == pytest.approx(0.04)
    np.testing.assert_allclose(demo.at(0.0), 0.0)
    np.testing.assert_allclose(demo.at(0.01), 0.5)
    np.testing.assert_allclose(demo.at(0.03), 2.0)
    np.testing.assert_allclose(demo.at(-1.0), 0.0)
    np.testing.assert_allclose(demo.at(10.0), 3.0)


@pytest.fixture(scope="module")
def transfer_plan() -> tuple[Demonstration, World, np.ndarray]:
    world = World("transfer_cube", seed=3)
    demo, sim = run_plan("transfer_cube", world.object_poses())
    box = sim.object_pose("box")[:3]
    return demo, world, box - sim.pads("left")


def test_planned_transfer_starts_at_the_start_pose(
    transfer_plan: tuple[Demonstration, World, np.ndarray],
) -> None:
    demo, world, _ = transfer_plan
    closed, open_ = world.gripper_range()
    start = np.array([*START_POSE[:6], (START_POSE[6] - closed) / (open_ - closed)])
    np.testing.assert_allclose(demo.at(0.0), np.concatenate([start, start]), atol=0.01)
    assert demo.leader.shape == (401, 14) and demo.duration == pytest.approx(8.0)


def test_planned_transfer_ends_with_the_box_in_the_left_gripper(
    transfer_plan: tuple[Demonstration, World, np.ndarray],
) -> None:
    demo, _, box_from_left_pads = transfer_plan
    assert np.linalg.norm(box_from_left_pads) < 0.03
    assert demo.at(demo.duration)[6] < 0.1  # left gripper closed
    assert demo.at(demo.duration)[13] > 0.9  # right gripper open


@pytest.mark.parametrize("task", TASKS)
def test_demonstrations_keep_the_roll_joints_near_their_start(task: str) -> None:
    """With the wrist straight, forearm roll and wrist rotate turn about one axis; unheld, the plan
    spun along (a, −a) to ±π at random: three joint-space variants of one scene."""
    world = World(task, seed=0)
    rolls = [arm * ROW + ARM_JOINTS.index(joint) for arm in range(2) for joint in ROLL_JOINTS]
    for seed in range(4):
        world.scatter_objects(seed)
        leader = plan_demonstration(task, world.object_poses()).leader
        assert np.abs(leader[:, rolls]).max() < 2.0, seed  # planned turns, never ±π


@pytest.fixture
def twin() -> Iterator[Twin]:
    with Twin(sim_profile(), lockstep=True, seed=0) as twin:
        yield twin


def test_the_leader_driver_moves_the_leader_servos_as_time_advances(twin: Twin) -> None:
    spec = twin.profile.arms["leader_left"]

    def driver(t: float) -> dict[str, Sequence[float]]:
        return {"leader_left": [0.5 * t, 0, 0, 0, 0, 0, spec.gripper.closed]}

    twin.set_leader_driver(driver)
    with DynamixelBus(twin.ports["leader_left"]) as bus:
        for t in (0.1, 0.5):
            twin.advance_to(t)
            state = bus.sync_read_state([1, 9])
            assert radians(int(state.position[0])) == pytest.approx(0.5 * t, abs=0.002)
            assert radians(int(state.position[1])) == pytest.approx(spec.gripper.closed, abs=0.002)
        twin.set_leader_driver(None)
        twin.advance_to(1.0)
        assert radians(int(bus.sync_read_state([1]).position[0])) == pytest.approx(0.25, abs=0.002)


def test_operator_plays_a_demonstration_on_the_leaders(twin: Twin) -> None:
    rows = np.linspace(np.zeros(14), np.full(14, 0.5), 11)  # 0.2 s of demonstration
    operator = ScriptedOperator(twin)
    operator.start(Demonstration("transfer_cube", rows), t0=0.1)
    np.testing.assert_allclose(twin.leader_pose("leader_left")[:6], 0.0)  # before t0: the first row
    twin.advance_to(0.2)  # halfway through
    assert not operator.done
    np.testing.assert_allclose(twin.leader_pose("leader_right")[:6], 0.25)
    gripper = twin.profile.arms["leader_right"].gripper
    expected = gripper.closed + 0.25 * (gripper.open - gripper.closed)
    assert twin.leader_pose("leader_right")[6] == pytest.approx(expected)
    twin.advance_to(0.4)
    assert operator.done
    np.testing.assert_allclose(twin.leader_pose("leader_left")[:6], 0.5)
    operator.stop()
    twin.advance_to(0.5)
    np.testing.assert_allclose(twin.leader_pose("leader_left")[:6], 0.5)  # let go: stays put


def test_operator_refuses_a_demonstration_of_another_task(twin: Twin) -> None:
    with pytest.raises(ValueError, match="insertion demonstration in a transfer_cube world"):
        ScriptedOperator(twin).start(Demonstration("insertion", np.zeros((2, 14))))


def test_planned_insertion_brings_the_peg_to_the_pin() -> None:
    world = World("insertion", seed=5)
    demo, sim = run_plan("insertion", world.object_poses())
    peg, socket = sim.object_pose("peg"), sim.object_pose("socket")
    assert demo.leader.shape == (401, 14)
    assert peg[2] > 0.1 and socket[2] > 0.1  # both held up in the air
    assert abs(peg[1] - socket[1]) < 0.01 and abs(peg[2] - socket[2]) < 0.01  # in line
    assert peg[0] - socket[0] < 0.11  # peg tip inside the socket, at the pin


def test_plan_rejects_an_unknown_task() -> None:
    with pytest.raises(ValueError, match="no demonstration"):
        plan_demonstration("juggling", {})
