"""The twin's scripted operator: task demonstrations played on the leader arms, as a person would.

A demonstration is planned the way ACT's scripted policies plan theirs: a few waypoints per gripper
(where the finger pads are, how the gripper is turned, how far it is open), interpolated every 20 ms
and executed in the end-effector variant of the gym-aloha scene, where each gripper is welded to a
mocap body and the arm follows it. The arm joint angles that this produces, recorded every step,
are the demonstration: played on the leader arms, the rig's teleop loop makes the follower arms
(real physics, no mocap) repeat it.

Waypoints name the centre of the finger pads, not the gripper link, so heights and grasp depths
read as distances to the objects. Orientations are built from each arm's "level" frame (gripper
horizontal, pointing away from its base) by pitching down about the gripper's y axis and rolling
about its x axis.

A plan comes in phases, each planned when it begins from the end-effector scene as it is then, as
a person looks before the next move: once a part is grasped, the rest is planned from where it
sits in the gripper (a grasp is never exactly where it was aimed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import mujoco
import numpy as np

from hardware.sim.twin import Twin
from hardware.sim.world import ARM_JOINTS, ARMS, ASSETS_DIR, START_POSE

DT = 0.02
PHYSICS_STEPS = 10  # per 20 ms step at the MJCF's 2 ms timestep
ROW = len(ARM_JOINTS)  # one arm's share of a leader row: 6 joint angles and the gripper opening

# From the gripper link's origin to the middle of the finger pads, along the gripper's x axis (m).
PAD_REACH = 0.125
FINGER_TIP = 0.154  # ... and to the fingertips
TIP_CLEARANCE = 0.004  # how far above the table the fingertips stop when grasping (m)

# A stiff weld between mocap and gripper (the MJCF's is soft: solref 0.01 1, solimp .25 .25 .001).
WELD_SOLREF = (0.005, 1.0)
WELD_SOLIMP = (0.95, 0.99, 0.001)


@dataclass(frozen=True)
class RollHold:
    """How the end-effector scene holds an arm's two roll joints (forearm roll, wrist rotate).

    Every plan starts with the wrist bent slightly (the start pose) and soon needs it bent the other
    way, so the wrist passes straight. There the two roll joints turn about one axis and the weld
    leaves (a, −a) free: unheld, the arm spins along it to ±π at random, and demonstrations of one
    scene come in three joint-space variants (a = 0, +π, −π) that look alike on camera — an
    ambiguity no policy should have to learn. A spring (N·m/rad) pulls them toward the start pose;
    damping (N·m·s/rad) only slows them, so the arm crosses the straight wrist before it spins.
    """

    spring: float = 0.0
    damping: float = 0.0


# Per task: transfer cube's grasp tolerates the spring; insertion's thin peg does not (the spring
# fights the weld and the grasp misses), so there damping holds the crossing: the operator then
# inserts the peg in 50/50 seeded episodes (`rig bench teleop --task insertion --episodes 50`).
ROLL_HOLD: Mapping[str, RollHold] = MappingProxyType(
    {"transfer_cube": RollHold(spring=20.0), "insertion": RollHold(damping=10.0)}
)
ROLL_JOINTS = ("forearm_roll", "wrist_rotate")


# ---------------------------------------------------------------------------- the demonstration


@dataclass(frozen=True, eq=False)
class Demonstration:
    """What the leader arms do, step by step: per row the left arm's six joint angles (rad) and
    gripper opening (0 closed .. 1 open), then the right arm's seven."""

    task: str
    leader: np.ndarray  # (T, 14)
    dt: float = DT

    def __post_init__(self) -> None:
        if self.leader.ndim != 2 or self.leader.shape[1] != 2 * ROW or len(self.leader) == 0:
            raise ValueError(f"leader rows must have shape (T >= 1, {2 * ROW}), got {self.leader.shape}")
        if self.dt <= 0:
            raise ValueError(f"dt must be positive, got {self.dt}")

    @property
    def duration(self) -> float:
        """Seconds from the first row to the last."""
        return (len(self.leader) - 1) * self.dt

    def at(self, t: float) -> np.ndarray:
        """The (14,) leader row at t seconds from the start, linear in between, held at the ends."""
        x = min(max(t / self.dt, 0.0), len(self.leader) - 1.0)
        i = int(x)
        frac = x - i
        if frac <= 0.0:
            return self.leader[i].copy()
        return (1.0 - frac) * self.leader[i] + frac * self.leader[i + 1]


# ------------------------------------------------------------------------------------ waypoints


@dataclass(frozen=True, eq=False)
class Waypoint:
    """One gripper at time t: pad centre (m, world), orientation (w x y z), opening 0..1."""

    t: float
    xyz: np.ndarray
    quat: np.ndarray
    opening: float


Trajectory = tuple[Waypoint, ...]
X, Z = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])


def _axis_quat(axis: Sequence[float], degrees: float) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, dtype=float), math.radians(degrees))
    return quat


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def _rotate(quat: np.ndarray, vector: np.ndarray) -> np.ndarray:
    out = np.zeros(3)
    mujoco.mju_rotVecQuat(out, vector, quat)
    return out


# Each arm's gripper held level, pointing away from its base: the right arm faces the left one.
LEVEL: Mapping[str, np.ndarray] = MappingProxyType(
    {"left": np.array([1.0, 0.0, 0.0, 0.0]), "right": _axis_quat((0, 0, 1), 180.0)}
)


def grip_quat(arm: str, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """The arm's level orientation pitched down by `pitch` and rolled by `roll` degrees."""
    return _mul(_mul(LEVEL[arm], _axis_quat((0, 1, 0), pitch)), _axis_quat((1, 0, 0), roll))


def _pose_at(trajectory: Trajectory, t: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Pad centre, orientation and opening at time t: linear between waypoints, held at the ends."""
    if t <= trajectory[0].t:
        first = trajectory[0]
        return first.xyz, first.quat, first.opening
    for a, b in itertools.pairwise(trajectory):
        if t <= b.t:
            f = (t - a.t) / max(b.t - a.t, 1e-9)
            quat = (1 - f) * a.quat + f * (b.quat if np.dot(a.quat, b.quat) >= 0 else -b.quat)
            return (
                a.xyz + f * (b.xyz - a.xyz),
                quat / np.linalg.norm(quat),
                a.opening + f * (b.opening - a.opening),
            )
    last = trajectory[-1]
    return last.xyz, last.quat, last.opening


# --------------------------------------------------------------------------- the task plans


@dataclass(frozen=True, eq=False)
class Scene:
    """What a phase of a plan is made from: the time, where each gripper is, where the objects are."""

    t: float
    grippers: Mapping[str, Waypoint]  # arm -> its commanded pose now
    objects: Mapping[str, np.ndarray]  # body name -> (7,) pos + quat


def _wp(t: float, xyz: Sequence[float] | np.ndarray, quat: np.ndarray, opening: float) -> Waypoint:
    return Waypoint(t, np.asarray(xyz, dtype=float), quat, opening)


def _hold(scene: Scene, arm: str, t: float, opening: float | None = None) -> Waypoint:
    """The arm where the scene has it, at time t (with a new opening, if given)."""
    now = scene.grippers[arm]
    return Waypoint(t, now.xyz, now.quat, now.opening if opening is None else opening)


def _grasp(xy: np.ndarray, quat: np.ndarray) -> np.ndarray:
    """Where the pads go to grasp an object lying at xy: fingertips just clear of the table."""
    tip = _rotate(quat, (FINGER_TIP - PAD_REACH) * X)
    return np.array([xy[0], xy[1], TIP_CLEARANCE]) - tip


# Transfer cube: where the right gripper brings the cube (its pads) for the left one to take it.
CUBE_MEET = np.array([0.0, 0.5, 0.22])

# Insertion: the peg's and socket's sizes (from the MJCF) and where they are brought together.
PEG_HALF_LENGTH = 0.06
SOCKET_HALF_LENGTH = 0.06
PIN_HALF_LENGTH = 0.04
INSERTION_MEET = np.array([0.0, 0.5, 0.18])


def transfer_pick(scene: Scene) -> dict[str, Trajectory]:
    """The right gripper, pitched down, grasps the cube from above; the left one, turned on its
    side, goes to wait open beside the meeting point."""
    pick = grip_quat("right", pitch=60.0)
    cube = _grasp(scene.objects["box"][:2], pick)
    right = (
        _hold(scene, "right", scene.t),
        _wp(1.4, cube + 0.09 * Z, pick, 1.0),  # above the cube
        _wp(2.2, cube, pick, 1.0),  # down around it
        _wp(2.8, cube, pick, 0.0),  # close
    )
    left = (_hold(scene, "left", scene.t), _wp(2.4, CUBE_MEET - 0.12 * X, grip_quat("left", roll=90.0), 1.0))
    return {"left": left, "right": right}


def transfer_handover(scene: Scene) -> dict[str, Trajectory]:
    """The right gripper lifts the cube to the meeting point; the left closes on it there from the
    side, the right lets go and backs off along its fingers, and the left carries the cube away.

    Planned once the cube is grasped, from where it sits in the right gripper, which keeps its
    orientation: the cube moves exactly as the gripper does. Something moves all the time: after a
    pause in which nothing moves a policy cannot tell how long it has paused, and one trained with a
    0.3 s pause before the lift held the grasped cube still until the episode ended (5 of its 9
    failures in 50).
    """
    t = scene.t
    left, right = scene.grippers["left"], scene.grippers["right"]
    cube = CUBE_MEET + scene.objects["box"][:3] - right.xyz  # where the cube will hang
    backed_off = CUBE_MEET - _rotate(right.quat, 0.07 * X)  # out along the fingers
    return {
        "right": (
            _hold(scene, "right", t),
            Waypoint(t + 1.2, CUBE_MEET, right.quat, 0.0),  # lift it to the meeting point
            Waypoint(t + 2.6, CUBE_MEET, right.quat, 0.0),
            Waypoint(t + 2.9, CUBE_MEET, right.quat, 1.0),  # let go
            Waypoint(t + 3.5, backed_off, right.quat, 1.0),
        ),
        "left": (
            _hold(scene, "left", t),
            _hold(scene, "left", t + 1.2),
            Waypoint(t + 1.6, cube - 0.10 * X, left.quat, 1.0),  # level with the cube
            Waypoint(t + 2.2, cube - 0.005 * X, left.quat, 1.0),  # around it
            Waypoint(t + 2.6, cube - 0.005 * X, left.quat, 0.0),  # grasp
            Waypoint(t + 3.0, cube - 0.005 * X, left.quat, 0.0),
            Waypoint(t + 3.8, cube - 0.12 * X + 0.03 * Z, left.quat, 0.0),  # carry it away
        ),
    }


def insertion_pick(scene: Scene) -> dict[str, Trajectory]:
    """Each gripper grasps its part from above: the left the socket, the right the peg."""
    pick_left = grip_quat("left", pitch=60.0)
    pick_right = grip_quat("right", pitch=60.0)
    socket = _grasp(scene.objects["socket"][:2], pick_left)
    peg = _grasp(scene.objects["peg"][:2], pick_right)
    left = (
        _hold(scene, "left", scene.t),
        _wp(1.6, socket + 0.08 * Z, pick_left, 1.0),
        _wp(2.6, socket, pick_left, 1.0),
        _wp(3.2, socket, pick_left, 0.0),
    )
    right = (
        _hold(scene, "right", scene.t),
        _wp(1.6, peg + 0.08 * Z, pick_right, 1.0),
        _wp(2.6, peg, pick_right, 1.0),
        _wp(3.2, peg, pick_right, 0.0),
    )
    return {"left": left, "right": right}


def insertion_join(scene: Scene) -> dict[str, Trajectory]:
    """Lift both parts, bring the socket to the middle and the peg in line with its opening, then
    push the peg in along the socket's axis until its tip is past the end of the pin.

    Planned once the parts are grasped, from where each part sits in its gripper; the grippers
    keep their orientation from here on, so a part moves exactly as its gripper does.
    """
    t = scene.t
    left, right = scene.grippers["left"], scene.grippers["right"]
    socket, peg = scene.objects["socket"], scene.objects["peg"]
    socket_in_hand = socket[:3] - left.xyz
    tip_in_hand = peg[:3] - _rotate(peg[3:], PEG_HALF_LENGTH * X) - right.xyz
    socket_at = INSERTION_MEET - 0.05 * X
    axis = _rotate(socket[3:], X)  # out of the socket's opening, towards the peg

    def right_for_tip(x_from_socket: float) -> np.ndarray:
        return socket_at + x_from_socket * axis - tip_in_hand

    lift = 0.08 * Z
    return {
        "left": (
            Waypoint(t, left.xyz, left.quat, 0.0),
            Waypoint(t + 0.6, left.xyz + lift, left.quat, 0.0),
            Waypoint(t + 1.8, socket_at - socket_in_hand, left.quat, 0.0),
        ),
        "right": (
            Waypoint(t, right.xyz, right.quat, 0.0),
            Waypoint(t + 0.6, right.xyz + lift, right.quat, 0.0),
            Waypoint(t + 1.8, right_for_tip(SOCKET_HALF_LENGTH + 0.03), right.quat, 0.0),
            Waypoint(t + 2.2, right_for_tip(SOCKET_HALF_LENGTH + 0.03), right.quat, 0.0),
            Waypoint(t + 3.4, right_for_tip(PIN_HALF_LENGTH - 0.01), right.quat, 0.0),
        ),
    }


Phase = Callable[[Scene], dict[str, Trajectory]]

# Each task's plan: phases by start time (s). A phase is planned when it begins, from where the
# grippers and objects are then, as a person looks before the next move.
PLANS: Mapping[str, tuple[tuple[float, Phase], ...]] = MappingProxyType(
    {
        "transfer_cube": ((0.0, transfer_pick), (2.8, transfer_handover)),
        "insertion": ((0.0, insertion_pick), (3.6, insertion_join)),
    }
)
EPISODE_S: Mapping[str, float] = MappingProxyType({"transfer_cube": 8.0, "insertion": 8.0})


# ------------------------------------------------------------------- the end-effector scene


class EndEffectorSim:
    """gym-aloha's end-effector scene: each gripper link welded to a mocap body that we move.

    The MJCF's welds carry the relative pose the compiler measured between mocap and gripper at
    qpos0; we make them identity, so a mocap pose *is* the gripper link's target pose. They are also
    soft (the gripper sags centimetres under gravity and overshoots fast moves); stiffened, the
    grippers go where the plan says to within a few millimetres, so waypoints can be geometric.
    """

    def __init__(self, task: str, object_poses: Mapping[str, np.ndarray]) -> None:
        self.model = mujoco.MjModel.from_xml_path(
            str(ASSETS_DIR / f"bimanual_viperx_end_effector_{task}.xml")
        )
        self.data = mujoco.MjData(self.model)
        m, d = self.model, self.data
        m.eq_data[:, 3:10] = (0, 0, 0, 1, 0, 0, 0)
        m.eq_solref[:] = WELD_SOLREF
        m.eq_solimp[:, :3] = WELD_SOLIMP
        self._qadr = {arm: self._qpos_addresses(arm) for arm in ARMS}
        hold = ROLL_HOLD[task]
        for arm, joint in itertools.product(ARMS, ROLL_JOINTS):
            jid = m.joint(f"vx300s_{arm}/{joint}").id
            m.jnt_stiffness[jid] = hold.spring
            m.dof_damping[m.jnt_dofadr[jid]] += hold.damping
            m.qpos_spring[m.jnt_qposadr[jid]] = START_POSE[ARM_JOINTS.index(joint)]
        self._links = {arm: m.body(f"vx300s_{arm}/gripper_link").id for arm in ARMS}
        self._mocap = {arm: int(m.body_mocapid[m.body(f"mocap_{arm}").id]) for arm in ARMS}
        # The finger actuators, in the MJCF's order: left arm (left, right finger), then right arm.
        self._fingers = {arm: (2 * i, 2 * i + 1) for i, arm in enumerate(ARMS)}
        self.closed_m, self.open_m = (float(v) for v in m.actuator_ctrlrange[0])

        start = np.array([*START_POSE, -START_POSE[-1]])
        for arm in ARMS:
            d.qpos[self._qadr[arm]] = start
        for name, pose in object_poses.items():
            d.qpos[self._free_joint_address(name) : self._free_joint_address(name) + 7] = pose
        mujoco.mj_forward(m, d)
        start_opening = (START_POSE[-1] - self.closed_m) / (self.open_m - self.closed_m)
        for arm in ARMS:
            link = self._links[arm]
            d.mocap_pos[self._mocap[arm]] = d.xpos[link]
            d.mocap_quat[self._mocap[arm]] = d.xquat[link]
            self._set_opening(arm, start_opening)
        self.start = {
            arm: Waypoint(0.0, self.pads(arm), d.xquat[self._links[arm]].copy(), start_opening)
            for arm in ARMS
        }

    def _qpos_addresses(self, arm: str) -> np.ndarray:
        names = [*ARM_JOINTS[:6], "left_finger", "right_finger"]
        return np.array([self.model.jnt_qposadr[self.model.joint(f"vx300s_{arm}/{j}").id] for j in names])

    def _free_joint_address(self, body: str) -> int:
        m = self.model
        bid = m.body(body).id
        if m.body_jntnum[bid] != 1 or m.jnt_type[m.body_jntadr[bid]] != mujoco.mjtJoint.mjJNT_FREE:
            raise ValueError(f"{body!r} is not a free object of this scene")
        return int(m.jnt_qposadr[m.body_jntadr[bid]])

    def _set_opening(self, arm: str, opening: float) -> None:
        metres = self.closed_m + float(np.clip(opening, 0.0, 1.0)) * (self.open_m - self.closed_m)
        left_finger, right_finger = self._fingers[arm]
        self.data.ctrl[left_finger], self.data.ctrl[right_finger] = metres, -metres

    def pads(self, arm: str) -> np.ndarray:
        """Where the middle of the arm's finger pads is now (world, m)."""
        link = self._links[arm]
        return self.data.xpos[link] + _rotate(self.data.xquat[link], PAD_REACH * X)

    def command(self, arm: str, pads: np.ndarray, quat: np.ndarray, opening: float) -> None:
        """Send the arm's mocap to put its finger pads at `pads`, turned `quat`, opened `opening`."""
        mocap = self._mocap[arm]
        self.data.mocap_pos[mocap] = pads - _rotate(quat, PAD_REACH * X)
        self.data.mocap_quat[mocap] = quat
        self._set_opening(arm, opening)

    def step(self) -> None:
        mujoco.mj_step(self.model, self.data, nstep=PHYSICS_STEPS)

    def arm_joints(self, arm: str) -> np.ndarray:
        """The arm's six joint angles now (rad)."""
        return self.data.qpos[self._qadr[arm][:6]].copy()

    def object_pose(self, body: str) -> np.ndarray:
        adr = self._free_joint_address(body)
        return self.data.qpos[adr : adr + 7].copy()


def plan_demonstration(
    task: str, object_poses: Mapping[str, np.ndarray], episode_s: float | None = None
) -> Demonstration:
    """Plans the task in end-effector space (waypoints of both grippers' poses and openings, as the
    ACT scripted policies do) and turns it into joint trajectories by running the end-effector
    (mocap) variant of the gym-aloha MJCF with the same object placement, recording the arm joint
    angles each 20 ms.

    Row k holds the joint angles the arms reach at the end of step k and the opening commanded in
    it: the target a follower should be at one step later. The gripper is recorded as commanded,
    not as measured, so that a follower squeezes what the demonstration grasped.
    `episode_s` (default: the task's) longer than the plan holds the last pose.
    """
    demo, _ = run_plan(task, object_poses, episode_s)
    return demo


def run_plan(
    task: str, object_poses: Mapping[str, np.ndarray], episode_s: float | None = None
) -> tuple[Demonstration, EndEffectorSim]:
    """plan_demonstration, also returning the end-effector scene as the plan left it (for tests)."""
    if task not in PLANS:
        raise ValueError(f"no demonstration for task {task!r}; tasks: {', '.join(PLANS)}")
    sim = EndEffectorSim(task, object_poses)
    phases = list(PLANS[task])
    plan: dict[str, Trajectory] = {arm: (sim.start[arm],) for arm in ARMS}
    objects: Mapping[str, np.ndarray] = dict(object_poses)
    steps = round((EPISODE_S[task] if episode_s is None else episode_s) / DT) + 1
    rows = np.empty((steps, 2 * ROW))
    for k in range(steps):
        t = k * DT
        poses = {arm: _pose_at(plan[arm], t) for arm in ARMS}
        if phases and phases[0][0] <= t + 1e-9:
            _, phase = phases.pop(0)
            now = {arm: Waypoint(t, *poses[arm]) for arm in ARMS}
            plan = phase(Scene(t, now, objects))
            poses = {arm: _pose_at(plan[arm], t) for arm in ARMS}
        for i, arm in enumerate(ARMS):
            pads, quat, opening = poses[arm]
            sim.command(arm, pads, quat, opening)
            rows[k, i * ROW + 6] = np.clip(opening, 0.0, 1.0)
        sim.step()
        for i, arm in enumerate(ARMS):
            rows[k, i * ROW : i * ROW + 6] = sim.arm_joints(arm)
        objects = {name: sim.object_pose(name) for name in object_poses}
    return Demonstration(task, rows), sim


# ------------------------------------------------------------------------------ the operator


class ScriptedOperator:
    """The twin's stand-in for a person: moves the twin's leader arms through a demonstration as
    simulated time passes. Exists only on the twin."""

    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        leaders = twin.profile.arms_with_role("leader")
        self._leader_of: dict[str, str] = {spec.side: name for name, spec in leaders.items()}
        missing = set(ARMS) - set(self._leader_of)
        if missing:
            raise ValueError(f"profile {twin.profile.name!r} has no leader arm on side {sorted(missing)}")
        self._demonstration: Demonstration | None = None
        self._t0 = 0.0
        self.max_reward = 0

    @property
    def demonstration(self) -> Demonstration | None:
        return self._demonstration

    def start(self, demonstration: Demonstration, t0: float | None = None) -> None:
        """Play `demonstration` on the leaders from simulated time t0 (default: now)."""
        if demonstration.task != self._twin.world.task:
            raise ValueError(f"a {demonstration.task} demonstration in a {self._twin.world.task} world")
        self._demonstration = demonstration
        self._t0 = self._twin.clock.now() if t0 is None else t0
        self.max_reward = 0
        self._twin.set_leader_driver(self._drive)
        for arm, radians in self.leader_poses(demonstration.at(self._twin.clock.now() - self._t0)).items():
            self._twin.set_leader_pose(arm, radians)

    def stop(self) -> None:
        """Let go of the leaders: they stay where the demonstration left them."""
        self._twin.set_leader_driver(None)
        self._demonstration = None

    @property
    def done(self) -> bool:
        """True once simulated time is past the demonstration's end (or none is playing)."""
        demo = self._demonstration
        return demo is None or self._twin.clock.now() >= self._t0 + demo.duration - 1e-9

    def demonstrate(self, task: str | None = None, delay: float = 0.0) -> Demonstration:
        """Plan the task from where the twin's objects are now, and play it `delay` seconds after the
        plan is ready (the start is taken after planning: a running lock-step loop moves the clock on
        while the plan is made)."""
        task = self._twin.world.task if task is None else task
        demonstration = plan_demonstration(task, self._twin.world.object_poses())
        self.start(demonstration, self._twin.clock.now() + delay)
        return demonstration

    @property
    def success(self) -> bool:
        """Whether the task was done while the demonstration played, or is done now."""
        return self.max_reward >= self._twin.world.max_reward or self._twin.world.success()

    def leader_poses(self, row: np.ndarray) -> dict[str, list[float]]:
        """A leader row as motor angles per leader arm, in each arm's profile joint order."""
        poses = {}
        for i, side in enumerate(ARMS):
            name = self._leader_of[side]
            spec = self._twin.profile.arms[name]
            values = row[i * ROW : (i + 1) * ROW]
            gripper = spec.gripper.closed + values[6] * (spec.gripper.open - spec.gripper.closed)
            angle = {joint: float(v) for joint, v in zip(ARM_JOINTS[:6], values[:6], strict=True)}
            angle["gripper"] = float(gripper)
            poses[name] = [angle[joint] for joint in spec.joints]
        return poses

    def _drive(self, t: float) -> dict[str, list[float]]:
        """The leader driver: the demonstration's pose at t, noting the reward on the way."""
        demo = self._demonstration
        self.max_reward = max(self.max_reward, self._twin.world.reward())
        if demo is None:
            return {}
        return self.leader_poses(demo.at(t - self._t0))
