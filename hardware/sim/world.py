"""The MuJoCo world of the simulated ALOHA twin: two ViperX 300s arms, a table and the task's objects.

The scene (MJCF and meshes) is the one the installed `gym-aloha` package ships; only its asset folder
is used, none of its environment code. The world is shared by several threads (the virtual servo
chains read joints and write targets, the simulated cameras render, the clock steps physics), so every
public method takes `World.lock`. Rendering holds the lock only to snapshot the scene and draws outside
it, so a slow software renderer never stalls the servo chains.

Units follow the MJCF: radians for the six arm joints; the gripper is the left finger's slide in
metres (the right finger mirrors it), which is what a servo chain maps its gripper ticks to.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# Software GL unless the caller chose a backend; must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "osmesa")

import mujoco
import numpy as np

ARM_JOINTS: tuple[str, ...] = (
    "waist",
    "shoulder",
    "elbow",
    "forearm_roll",
    "wrist_angle",
    "wrist_rotate",
    "gripper",
)
ARMS: tuple[str, ...] = ("left", "right")
TASKS: tuple[str, ...] = ("transfer_cube", "insertion")


def _assets_dir() -> pathlib.Path:
    """gym-aloha's asset folder, found without importing the package (which pulls in gymnasium)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the simulated twin needs the gym-aloha package for its MJCF: pip install gym-aloha"
        )
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "assets"


ASSETS_DIR = _assets_dir()

# The MJCF joints behind one arm, in ARM_JOINTS order with the gripper split into its two fingers.
_MJCF_JOINTS: tuple[str, ...] = (*ARM_JOINTS[:6], "left_finger", "right_finger")
_GRIPPER = 6

# gym-aloha's START_ARM_POSE for one arm (the same for both): six angles, then the left finger opening.
START_POSE: tuple[float, ...] = (0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.02239)


@dataclass(frozen=True)
class ObjectRange:
    """Where reset may place a free body: uniform in x and y, at a fixed height, upright."""

    body: str
    x: tuple[float, float]
    y: tuple[float, float]
    z: float = 0.05


@dataclass(frozen=True)
class TaskSpec:
    """One task: its MJCF file in gym-aloha's assets and the placement ranges of its objects."""

    xml: str
    objects: tuple[ObjectRange, ...]


# The placement ranges are gym-aloha's (`sample_box_pose`, `sample_insertion_pose`).
TASK_SPECS: Mapping[str, TaskSpec] = MappingProxyType(
    {
        "transfer_cube": TaskSpec(
            xml="bimanual_viperx_transfer_cube.xml",
            objects=(ObjectRange("box", x=(0.0, 0.2), y=(0.4, 0.6)),),
        ),
        "insertion": TaskSpec(
            xml="bimanual_viperx_insertion.xml",
            objects=(
                ObjectRange("peg", x=(0.1, 0.2), y=(0.4, 0.6)),
                ObjectRange("socket", x=(-0.2, -0.1), y=(0.4, 0.6)),
            ),
        ),
    }
)

_LEFT_FINGER_GEOM = "vx300s_left/10_left_gripper_finger"
_RIGHT_FINGER_GEOM = "vx300s_right/10_right_gripper_finger"
_SOCKET_GEOMS = ("socket-1", "socket-2", "socket-3", "socket-4")


@dataclass(frozen=True)
class JointState:
    """One arm's joints in ARM_JOINTS order; the gripper entry is the left finger's slide."""

    position: np.ndarray  # (7,) rad, gripper m
    velocity: np.ndarray  # (7,) rad/s, gripper m/s
    effort: np.ndarray  # (7,) actuator force: N·m, gripper N


def _gl_context_class() -> type:
    """The GL context class for the backend MUJOCO_GL names (osmesa unless set).

    Chosen here rather than by `mujoco.Renderer`, which fixes its backend when `mujoco` is first
    imported: if anything imported mujoco before this module set MUJOCO_GL, it would try GLFW and fail
    on a headless machine.
    """
    backend = os.environ.get("MUJOCO_GL", "osmesa").strip().lower()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    return GLContext


class _Renderer:
    """An offscreen renderer of one size for one thread: GL context, MjrContext and scene."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int):
        self.height, self.width = height, width
        self._gl = _gl_context_class()(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        # Shadows and reflections cost most of a software-rendered frame and add nothing to learning.
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)

    def update_scene(self, model: mujoco.MjModel, data: mujoco.MjData, camera_id: int) -> None:
        """Copy the geometry seen by a model camera out of `data` (cheap; done under the world lock)."""
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )

    def render(self) -> np.ndarray:
        """Draw the last updated scene into a (h, w, 3) uint8 array."""
        self._gl.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._context)
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(out, None, self._rect, self._context)
        return np.ascontiguousarray(out[::-1])  # GL rows run bottom-up

    def close(self) -> None:
        """Free the GL context (which owns the GPU-side objects) and the MjrContext."""
        self._gl.free()
        self._context.free()


@dataclass
class _RendererSlot:
    """A renderer owned by one thread; `busy` keeps close() from freeing it mid-frame."""

    renderer: _Renderer
    busy: threading.Lock


class World:
    """The simulated bimanual scene: physics, position-controlled arms, task reward and cameras."""

    max_reward: int = 4

    def __init__(self, task: str = "transfer_cube", seed: int | None = None):
        if task not in TASK_SPECS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        self.task = task
        self.lock = threading.RLock()
        self._spec = TASK_SPECS[task]
        self.model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / self._spec.xml))
        self.data = mujoco.MjData(self.model)
        m = self.model

        def joint_id(name: str) -> int:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise RuntimeError(f"{self._spec.xml} has no joint {name!r}")
            return jid

        # Per arm, the qpos/qvel addresses and the actuator of each of its 8 MJCF joints.
        actuator_of_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu)}
        self._qadr: dict[str, np.ndarray] = {}
        self._vadr: dict[str, np.ndarray] = {}
        self._act: dict[str, np.ndarray] = {}
        for arm in ARMS:
            jids = [joint_id(f"vx300s_{arm}/{j}") for j in _MJCF_JOINTS]
            self._qadr[arm] = np.array([m.jnt_qposadr[j] for j in jids])
            self._vadr[arm] = np.array([m.jnt_dofadr[j] for j in jids])
            self._act[arm] = np.array([actuator_of_joint[j] for j in jids])

        # Torque off zeroes an actuator's gain and bias; these are the values to restore.
        self._gain = m.actuator_gainprm.copy()
        self._bias = m.actuator_biasprm.copy()

        self._objects: dict[str, int] = {}  # free body name -> qpos address
        for j in range(m.njnt):
            if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                self._objects[m.body(m.jnt_bodyid[j]).name] = int(m.jnt_qposadr[j])

        self._geom_names = [m.geom(g).name for g in range(m.ngeom)]
        self._cameras = tuple(m.camera(c).name for c in range(m.ncam))
        self._renderers: dict[tuple[int, int, int], _RendererSlot] = {}  # (thread id, h, w)
        self._closed = False
        self._rng = np.random.default_rng(seed)
        self.reset()

    # ----------------------------------------------------------------- state

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        with self.lock:
            return float(self.data.time)

    def reset(self, seed: int | None = None) -> None:
        """Both arms at the start pose holding it, torque on, objects placed at random, time 0.

        A seed restarts the placement generator; without one the next placement of the generator
        given at construction is drawn, so a seeded World replays the same sequence of episodes.
        """
        with self.lock:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            m, d = self.model, self.data
            mujoco.mj_resetData(m, d)
            m.actuator_gainprm[:] = self._gain
            m.actuator_biasprm[:] = self._bias
            start = np.array([*START_POSE, -START_POSE[_GRIPPER]])
            for arm in ARMS:
                d.qpos[self._qadr[arm]] = start
                d.ctrl[self._act[arm]] = start
            self._place_objects()

    def scatter_objects(self, seed: int | None = None) -> None:
        """A new episode's objects, placed at random, without touching the arms or the clock: the
        rig's loop keeps running across episodes, so simulated time must not jump back. A seed
        restarts the placement generator (seeded evaluation episodes)."""
        with self.lock:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            self._place_objects()

    def _place_objects(self) -> None:
        d = self.data
        for obj in self._spec.objects:
            adr = self._objects[obj.body]
            dof = self.model.jnt_dofadr[self.model.body_jntadr[self.model.body(obj.body).id]]
            x = self._rng.uniform(*obj.x)
            y = self._rng.uniform(*obj.y)
            d.qpos[adr : adr + 7] = (x, y, obj.z, 1.0, 0.0, 0.0, 0.0)
            d.qvel[dof : dof + 6] = 0.0
        mujoco.mj_forward(self.model, d)

    def step_to(self, t: float) -> None:
        """Advance physics in whole model timesteps until time >= t (within rounding); no-op if there."""
        with self.lock:
            dt = self.model.opt.timestep
            # Within a nanosecond counts as there, so float accumulation (250 steps of 0.002 s make
            # 0.5000000000000003 s) never costs an extra step.
            n = math.ceil((t - self.data.time - 1e-9) / dt)
            if n > 0:
                mujoco.mj_step(self.model, self.data, nstep=n)

    def joint_state(self, arm: str) -> JointState:
        """Position, velocity and actuator force of one arm's seven joints."""
        self._check_arm(arm)
        with self.lock:
            d = self.data
            return JointState(
                position=d.qpos[self._qadr[arm][:7]].copy(),
                velocity=d.qvel[self._vadr[arm][:7]].copy(),
                effort=d.actuator_force[self._act[arm][:7]].copy(),
            )

    def place_arm(self, arm: str, positions: np.ndarray) -> None:
        """Put an arm's joints at `positions` (ARM_JOINTS order; gripper: left finger opening in m,
        mirrored) at rest, as a hand would; targets stay. How the scripted operator moves a follower
        whose torque is off (calibration).
        """
        self._check_arm(arm)
        values = np.asarray(positions, dtype=np.float64)
        if values.shape != (len(ARM_JOINTS),):
            raise ValueError(f"an arm has {len(ARM_JOINTS)} joints ({ARM_JOINTS}), got shape {values.shape}")
        with self.lock:
            self.data.qpos[self._qadr[arm]] = (*values, -values[_GRIPPER])
            self.data.qvel[self._vadr[arm]] = 0.0
            mujoco.mj_forward(self.model, self.data)

    # -------------------------------------------------------------- actuators

    def set_target(self, arm: str, joint: int, value: float) -> None:
        """Set a position target (rad; gripper: left finger opening in m, mirrored), clamped to range."""
        self._check_arm(arm)
        self._check_joint(joint)
        with self.lock:
            acts = self._act[arm]
            if joint == _GRIPPER:
                self.data.ctrl[acts[6]] = self._clamp(acts[6], value)
                self.data.ctrl[acts[7]] = self._clamp(acts[7], -value)
            else:
                self.data.ctrl[acts[joint]] = self._clamp(acts[joint], value)

    def set_torque(self, arm: str, joint: int, enabled: bool) -> None:
        """Switch a joint's actuator on or off; off it exerts no force, as a servo with torque disabled.

        On enable the target becomes the present position, so the joint holds where it was instead of
        jumping back to a stale target.
        """
        self._check_arm(arm)
        self._check_joint(joint)
        with self.lock:
            m, d = self.model, self.data
            idx = [6, 7] if joint == _GRIPPER else [joint]
            for i in idx:
                a = self._act[arm][i]
                if enabled:
                    d.ctrl[a] = self._clamp(a, d.qpos[self._qadr[arm][i]])
                    m.actuator_gainprm[a] = self._gain[a]
                    m.actuator_biasprm[a] = self._bias[a]
                else:
                    m.actuator_gainprm[a] = 0.0
                    m.actuator_biasprm[a] = 0.0

    def torque_enabled(self, arm: str, joint: int) -> bool:
        """Whether the joint's actuator is currently producing force (see set_torque)."""
        self._check_arm(arm)
        self._check_joint(joint)
        with self.lock:
            return bool(self.model.actuator_gainprm[self._act[arm][joint], 0] != 0.0)

    def force_limit(self, arm: str, joint: int) -> float | None:
        """The most force the joint's actuator may exert (its forcerange), None where unlimited."""
        self._check_arm(arm)
        self._check_joint(joint)
        a = self._act[arm][joint]
        if not self.model.actuator_forcelimited[a]:
            return None
        return float(np.max(np.abs(self.model.actuator_forcerange[a])))

    def gripper_range(self) -> tuple[float, float]:
        """(closed, open) left finger opening in metres, the range set_target clamps the gripper to."""
        with self.lock:
            lo, hi = self.model.actuator_ctrlrange[self._act[ARMS[0]][_GRIPPER]]
            return float(lo), float(hi)

    # ----------------------------------------------------------------- reward

    def reward(self) -> int:
        """The task's staged reward 0..4 from the current contacts, with gym-aloha's stages."""
        with self.lock:
            names = self._geom_names
            c = self.data.contact
            touching = {frozenset((names[g1], names[g2])) for g1, g2 in zip(c.geom1, c.geom2, strict=True)}

        def touch(a: str, *others: str) -> bool:
            return any(frozenset((a, b)) in touching for b in others)

        if self.task == "transfer_cube":
            right = touch("red_box", _RIGHT_FINGER_GEOM)
            left = touch("red_box", _LEFT_FINGER_GEOM)
            on_table = touch("red_box", "table")
            if left:  # 3: attempted transfer, 4: the left gripper holds it in the air
                return 3 if on_table else 4
            if right:  # 1: touched by the right gripper, 2: lifted
                return 1 if on_table else 2
            return 0

        # insertion
        if touch("red_peg", "pin"):
            return 4
        grasped_both = touch("red_peg", _RIGHT_FINGER_GEOM) and any(
            touch(s, _LEFT_FINGER_GEOM) for s in _SOCKET_GEOMS
        )
        in_air = not touch("red_peg", "table") and not any(touch(s, "table") for s in _SOCKET_GEOMS)
        if touch("red_peg", *_SOCKET_GEOMS) and in_air:
            return 3
        if grasped_both:
            return 2 if in_air else 1
        return 0

    def success(self) -> bool:
        """Whether the task is done (the top reward stage)."""
        return self.reward() == self.max_reward

    def object_poses(self) -> dict[str, np.ndarray]:
        """Each free body's pose as (x, y, z, qw, qx, qy, qz) in the world frame."""
        with self.lock:
            return {name: self.data.qpos[adr : adr + 7].copy() for name, adr in self._objects.items()}

    # -------------------------------------------------------------- rendering

    @property
    def cameras(self) -> tuple[str, ...]:
        """The names of the model's cameras, in model order."""
        return self._cameras

    def render(self, camera: str, height: int, width: int) -> np.ndarray:
        """An RGB frame (h, w, 3) uint8 from a model camera, shadows and reflections off.

        The scene is snapshotted under the lock; the (slow) drawing happens outside it, with one
        renderer per thread and size.
        """
        if camera not in self._cameras:
            raise ValueError(f"unknown camera {camera!r}; the model's cameras: {', '.join(self._cameras)}")
        camera_id = self._cameras.index(camera)
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        slot = self._renderer_slot(height, width)
        with self.lock:
            if self._closed:
                raise RuntimeError("World is closed")
            slot.busy.acquire()
            try:
                slot.renderer.update_scene(self.model, self.data, camera_id)
            except BaseException:
                slot.busy.release()
                raise
        try:
            return slot.renderer.render()
        finally:
            slot.busy.release()

    def _renderer_slot(self, height: int, width: int) -> _RendererSlot:
        """This thread's renderer for the size, created on first use.

        Creating one (GL context, uploading meshes) takes a tenth of a second in software, so it is
        done outside the lock; only this thread ever inserts under its own key.
        """
        key = (threading.get_ident(), height, width)
        with self.lock:
            if self._closed:
                raise RuntimeError("World is closed")
            slot = self._renderers.get(key)
            if slot is not None:
                return slot
            vis = self.model.vis.global_
            # The offscreen buffer (640x480 in this MJCF) bounds the frame; grow it for larger frames.
            vis.offwidth = max(vis.offwidth, width)
            vis.offheight = max(vis.offheight, height)
        renderer = _Renderer(self.model, height, width)
        with self.lock:
            if self._closed:
                renderer.close()
                raise RuntimeError("World is closed")
            slot = _RendererSlot(renderer, threading.Lock())
            self._renderers[key] = slot
            return slot

    def close(self) -> None:
        """Free every renderer (of every thread); render() afterwards raises."""
        with self.lock:
            self._closed = True
            slots, self._renderers = list(self._renderers.values()), {}
            for slot in slots:
                with slot.busy:
                    slot.renderer.close()

    # ---------------------------------------------------------------- helpers

    def _clamp(self, actuator: int, value: float) -> float:
        lo, hi = self.model.actuator_ctrlrange[actuator]
        return float(min(max(value, lo), hi))

    @staticmethod
    def _check_arm(arm: str) -> None:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid arms: {', '.join(ARMS)}")

    @staticmethod
    def _check_joint(joint: int) -> None:
        if not 0 <= joint < len(ARM_JOINTS):
            raise ValueError(f"joint index {joint} out of range 0..{len(ARM_JOINTS) - 1} ({ARM_JOINTS})")
