"""The simulated twin's MuJoCo world: real physics and real (software) rendering, kept small and fast."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import mujoco
import numpy as np
import pytest

from hardware.sim.world import ARMS, START_POSE, TASK_SPECS, TASKS, World

H, W = 96, 128  # small frames keep software rendering quick


@pytest.fixture
def world() -> Iterator[World]:
    w = World("transfer_cube", seed=0)
    yield w
    w.close()


def test_reset_puts_both_arms_at_start_pose_holding_still(world: World) -> None:
    world.step_to(0.3)
    world.set_target("left", 0, 0.4)
    world.step_to(0.6)
    world.reset()
    assert world.time == 0.0
    for arm in ARMS:
        state = world.joint_state(arm)
        assert state.position.shape == state.velocity.shape == state.effort.shape == (7,)
        np.testing.assert_allclose(state.position, START_POSE)
        np.testing.assert_allclose(state.velocity, 0.0)
    # Targets equal the pose, so the arms stay put.
    world.step_to(0.2)
    for arm in ARMS:
        np.testing.assert_allclose(world.joint_state(arm).position[:6], START_POSE[:6], atol=0.02)


def test_same_seed_same_placement_different_seeds_differ_within_ranges() -> None:
    for task in TASKS:
        a, b, c = World(task, seed=1), World(task, seed=1), World(task, seed=2)
        pa, pb, pc = a.object_poses(), b.object_poses(), c.object_poses()
        assert pa.keys() == {o.body for o in TASK_SPECS[task].objects}
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name])
            assert not np.allclose(pa[name][:2], pc[name][:2])
        # reset(seed) replays; reset() draws a fresh placement.
        a.reset(seed=1)
        np.testing.assert_array_equal(a.object_poses()[name], pb[name])
        a.reset()
        assert not np.allclose(a.object_poses()[name][:2], pb[name][:2])
        for seed in range(20):
            a.reset(seed=seed)
            poses = a.object_poses()
            for obj in TASK_SPECS[task].objects:
                x, y, z = poses[obj.body][:3]
                assert obj.x[0] <= x <= obj.x[1]
                assert obj.y[0] <= y <= obj.y[1]
                assert z == obj.z
                np.testing.assert_array_equal(poses[obj.body][3:], [1, 0, 0, 0])


def test_step_to_advances_whole_timesteps_and_never_goes_back(world: World) -> None:
    world.step_to(0.5)
    assert 0.5 - 1e-9 <= world.time < 0.5 + world.model.opt.timestep
    before = world.time
    world.step_to(0.2)
    assert world.time == before


def test_set_target_moves_joint_and_gripper(world: World) -> None:
    world.set_target("left", 0, 0.5)
    world.set_target("right", 1, -0.5)
    closed, opened = world.gripper_range()
    assert (closed, opened) == pytest.approx((0.021, 0.057))
    world.set_target("left", 6, 1.0)  # clamped to fully open
    world.step_to(0.5)
    left, right = world.joint_state("left"), world.joint_state("right")
    assert left.position[0] == pytest.approx(0.5, abs=0.02)
    assert right.position[1] == pytest.approx(-0.5, abs=0.02)
    assert opened - 0.003 < left.position[6] <= opened + 1e-4
    # The right finger mirrors the left one.
    right_finger = world.data.joint("vx300s_left/right_finger").qpos[0]
    assert right_finger == pytest.approx(-left.position[6], abs=0.002)

    world.set_target("left", 6, closed)
    world.step_to(1.0)
    assert world.joint_state("left").position[6] < closed + 0.004


def test_torque_off_makes_actuator_force_zero_and_on_holds_position(world: World) -> None:
    world.set_target("left", 1, -0.5)
    world.step_to(0.1)
    assert world.joint_state("left").effort[1] != 0.0
    world.set_torque("left", 1, False)
    world.set_torque("left", 6, False)
    assert not world.torque_enabled("left", 1)
    world.step_to(0.3)
    effort = world.joint_state("left").effort
    assert effort[1] == 0.0 and effort[6] == 0.0
    assert effort[2] != 0.0  # the other joints still hold

    world.set_torque("left", 1, True)
    assert world.torque_enabled("left", 1)
    held = world.joint_state("left").position[1]
    world.step_to(0.6)
    # The target became the present position: no jump back to the old -0.5 target.
    assert world.joint_state("left").position[1] == pytest.approx(held, abs=0.02)


def test_render_shape_cameras_differ_and_arm_motion_shows(world: World) -> None:
    top = world.render("top", H, W)
    assert top.shape == (H, W, 3) and top.dtype == np.uint8
    assert top.std() > 0
    angle = world.render("angle", H, W)
    assert not np.array_equal(top, angle)

    world.set_target("left", 0, 0.8)
    world.step_to(0.5)
    moved = world.render("top", H, W)
    assert np.abs(moved.astype(int) - top.astype(int)).sum() > 1000


def test_render_from_another_thread(world: World) -> None:
    here = world.render("top", H, W)
    result: dict[str, np.ndarray | BaseException] = {}

    def worker() -> None:
        try:
            result["frame"] = world.render("top", H, W)
        except BaseException as e:
            result["frame"] = e

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    frame = result["frame"]
    assert isinstance(frame, np.ndarray)
    np.testing.assert_array_equal(frame, here)


def test_render_while_other_threads_step_and_command(world: World) -> None:
    errors: list[BaseException] = []

    def stepper() -> None:
        try:
            for k in range(1, 50):
                world.step_to(k * 0.01)
                world.set_target("right", 0, 0.01 * k)
                world.joint_state("right")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=stepper)
    thread.start()
    for _ in range(3):
        assert world.render("angle", H, W).shape == (H, W, 3)
    thread.join(timeout=30)
    assert not errors


def test_close_frees_renderers_and_later_render_raises(world: World) -> None:
    world.render("top", H, W)
    thread = threading.Thread(target=world.render, args=("top", H, W))
    thread.start()
    thread.join(timeout=30)
    world.close()
    with pytest.raises(RuntimeError):
        world.render("top", H, W)
    world.close()  # idempotent


def test_bad_names_give_clear_errors(world: World) -> None:
    with pytest.raises(ValueError, match=r"transfer_cube.*insertion"):
        World("stack_blocks")
    with pytest.raises(ValueError, match=r"left_pillar.*top.*right_wrist"):
        world.render("nope", H, W)
    with pytest.raises(ValueError, match=r"left.*right"):
        world.joint_state("middle")
    with pytest.raises(ValueError, match="out of range"):
        world.set_target("left", 7, 0.0)


def test_insertion_loads_with_peg_and_socket_and_rewards_insertion() -> None:
    world = World("insertion", seed=3)
    poses = world.object_poses()
    assert set(poses) == {"peg", "socket"}
    assert poses["peg"][0] > poses["socket"][0]  # peg on the right, socket on the left
    assert world.reward() == 0 and not world.success()
    # Put the peg in the socket: it touches the pin, the last stage.
    with world.lock:
        world.data.joint("red_peg_joint").qpos[:] = world.data.joint("blue_socket_joint").qpos
        mujoco.mj_forward(world.model, world.data)
    assert world.reward() == world.max_reward == 4
    assert world.success()
    world.close()


def test_transfer_cube_reward_starts_at_zero(world: World) -> None:
    world.step_to(0.2)
    assert world.reward() == 0
    assert not world.success()
