"""The simulated twin of a rig profile: one MuJoCo world, a virtual servo chain per arm on its own
pseudo-terminal, and a software RealSense device per camera, all on one simulated clock.

Two ways to run the clock:
- lock-step (the default for the rig): time advances only when the rig's loop waits for its next
  deadline (`clock.sleep_until`), so a slow renderer slows the whole rig evenly instead of making
  it drop frames, and recorded timestamps stay exact;
- free-running (`rig sim`, serving other programs): a thread advances time, never faster than the
  wall clock, slower when rendering cannot keep up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from hardware.dynamixel.control_table import model_named
from hardware.profile import ArmSpec, JointSpec, Profile
from hardware.sim.cameras import SimulatedCamera
from hardware.sim.joints import MirroredShadow, SimulatedGripper, SimulatedJoint
from hardware.sim.servo import HeldJoint, ServoBackend, VirtualServo
from hardware.sim.servo_chain import VirtualServoChain
from hardware.sim.world import ARM_JOINTS, World

FREE_RUN_CHUNK_S = 0.01
PTY_FLUSH_S = 0.0002

# A function of simulated time that says where the leader arms are: arm name -> motor angles (rad).
LeaderDriver = Callable[[float], Mapping[str, Sequence[float]]]


class Twin:
    """Everything the profile names, simulated. `start()` serves it; `close()` stops it all."""

    def __init__(self, profile: Profile, lockstep: bool | None = None, seed: int | None = None) -> None:
        if profile.twin is None:
            raise ValueError(
                f"profile {profile.name!r} describes real hardware; a twin needs a profile with [twin]"
            )
        self.profile = profile
        self.lockstep = profile.twin.lockstep if lockstep is None else lockstep
        self.world = World(profile.twin.task, seed=profile.twin.seed if seed is None else seed)
        self._leaders: dict[str, list[HeldJoint]] = {}
        self.chains = {name: self._build_chain(name, arm) for name, arm in profile.arms.items()}
        self.cameras = {name: self._build_camera(name) for name in profile.cameras}
        self._next_frame = {name: 0.0 for name in self.cameras}
        self._advance_lock = threading.Lock()
        self._leader_driver: LeaderDriver | None = None
        self._stop = threading.Event()
        self._runner: threading.Thread | None = None
        self.clock = TwinClock(self)

    # ---- assembly --------------------------------------------------------------------------
    def _joint_index(self, arm_name: str, joint: str) -> int:
        if joint not in ARM_JOINTS:
            raise ValueError(
                f"arm {arm_name}: joint {joint!r} has no counterpart in the twin ({', '.join(ARM_JOINTS)})"
            )
        return ARM_JOINTS.index(joint)

    def _build_chain(self, name: str, arm: ArmSpec) -> VirtualServoChain:
        servos = []
        held: list[HeldJoint] = []
        start = self.world.joint_state(arm.side).position
        for joint, spec in arm.joints.items():
            index = self._joint_index(name, joint)
            backend: ServoBackend
            if arm.role == "follower":
                backend = (
                    SimulatedGripper(self.world, arm.side, arm.gripper.closed, arm.gripper.open)
                    if joint == "gripper"
                    else SimulatedJoint(
                        self.world, arm.side, index, self._torque_scale(arm.side, index, spec)
                    )
                )
            else:
                backend = HeldJoint(self._leader_start(arm, joint, float(start[index])))
                held.append(backend)
            model = model_named(spec.motor)
            servos.append(VirtualServo(spec.id, model, backend))
            if spec.shadow is not None:
                shadow = VirtualServo(spec.shadow, model, MirroredShadow(backend))
                shadow.set("drive_mode", 1)  # mounted mirrored; reverse mode makes it read like the primary
                shadow.set("secondary_id", spec.id)
                shadow.reboot()
                servos.append(shadow)
        if arm.role == "leader":
            self._leaders[name] = held
        return VirtualServoChain(name, servos)

    def _torque_scale(self, side: str, index: int, spec: JointSpec) -> float:
        """Actuator force range -> the motor's stall torque, halved where a shadow motor shares the load."""
        limit = self.world.force_limit(side, index)
        scale = 1.0 if limit is None else model_named(spec.motor).stall_torque_nm / limit
        return scale / 2 if spec.shadow is not None else scale

    def _leader_start(self, arm: ArmSpec, joint: str, follower_value: float) -> float:
        if joint != "gripper":
            return follower_value
        closed_m, open_m = self.world.gripper_range()
        fraction = (follower_value - closed_m) / (open_m - closed_m)
        return arm.gripper.closed + fraction * (arm.gripper.open - arm.gripper.closed)

    def _build_camera(self, name: str) -> SimulatedCamera:
        spec = self.profile.cameras[name]
        view = spec.view or name
        return SimulatedCamera(
            name=name,
            serial=spec.serial,
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            render=lambda: self.world.render(view, spec.height, spec.width),
        )

    # ---- what drivers see ------------------------------------------------------------------
    @property
    def ports(self) -> dict[str, str]:
        return {name: chain.port for name, chain in self.chains.items()}

    @property
    def camera_devices(self) -> list:
        return [camera.device for camera in self.cameras.values()]

    def take_problems(self) -> list[str]:
        """What went wrong in the servo chains since the last call, for `rig sim` to say."""
        return [problem for chain in self.chains.values() for problem in chain.take_problems()]

    # ---- the operator's side ---------------------------------------------------------------
    def set_leader_pose(self, arm: str, radians: Sequence[float]) -> None:
        """Move a leader arm by hand: motor angles (rad) per joint, in the profile's joint order."""
        joints = self._leaders[arm]
        if len(radians) != len(joints):
            raise ValueError(f"{arm} has {len(joints)} joints, got {len(radians)} values")
        chain = self.chains[arm]

        def move() -> None:
            for joint, value in zip(joints, radians, strict=True):
                joint.position = float(value)

        chain.locked(move)

    def set_leader_driver(self, driver: LeaderDriver | None) -> None:
        """Have a function of simulated time pose the leaders (arm -> motor angles) as time advances.

        `advance_to` calls it after each physics step it takes, at least once per call at the final
        time, and applies what it returns with `set_leader_pose`; None removes it.
        """
        self._leader_driver = driver

    def _drive_leaders(self) -> None:
        driver = self._leader_driver
        if driver is not None:
            for arm, radians in driver(self.world.time).items():
                self.set_leader_pose(arm, radians)

    def leader_pose(self, arm: str) -> np.ndarray:
        return np.array([joint.position for joint in self._leaders[arm]])

    # ---- time ------------------------------------------------------------------------------
    def advance_to(self, t: float) -> None:
        """Run physics up to simulated time t, publishing every camera frame that falls due on the way.

        A leader driver (`set_leader_driver`) poses the leaders after each step on the way.
        """
        with self._advance_lock:
            stepped = False
            while True:
                due = min(self._next_frame.values(), default=float("inf"))
                if due <= self.world.time + 1e-9:
                    self._publish_due()
                    continue
                if self.world.time >= t - 1e-9:
                    break
                self.world.step_to(min(t, due))
                self._drive_leaders()
                stepped = True
            if not stepped:
                self._drive_leaders()

    def _publish_due(self) -> None:
        """Render the frames that fall due now, for the cameras someone is streaming."""
        now = self.world.time
        for name, camera in self.cameras.items():
            if self._next_frame[name] <= now + 1e-9:
                if camera.streaming:
                    camera.publish(now)
                self._next_frame[name] += camera.period

    def _free_run(self) -> None:
        wall_start, sim_start = time.monotonic(), self.world.time
        while not self._stop.is_set():
            self.advance_to(self.world.time + FREE_RUN_CHUNK_S)
            ahead = (self.world.time - sim_start) - (time.monotonic() - wall_start)
            if ahead > 0:
                self._stop.wait(ahead)
            elif ahead < -1.0:  # rendering cannot keep up: let simulated time lag, do not race to catch up
                wall_start, sim_start = time.monotonic(), self.world.time

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> Twin:
        for chain in self.chains.values():
            chain.start()
        if not self.lockstep:
            self._runner = threading.Thread(target=self._free_run, name="twin-clock", daemon=True)
            self._runner.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._runner is not None:
            self._runner.join(timeout=5)
        for chain in self.chains.values():
            chain.close()
        for camera in self.cameras.values():
            camera.close()
        self.world.close()

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class TwinClock:
    """The lock-step twin's simulated clock, seen through the rig's `Clock` interface: waiting on it
    is what runs the simulation. (A free-running twin keeps pace with the wall clock instead, and
    the rig schedules on that.)"""

    def __init__(self, twin: Twin) -> None:
        self._twin = twin

    def now(self) -> float:
        return self._twin.world.time

    def sleep_until(self, t: float) -> None:
        # What the driver wrote before it waited takes effect first. The pause lets the kernel
        # move bytes just written to the pty across to the side the chain reads.
        time.sleep(PTY_FLUSH_S)
        for chain in self._twin.chains.values():
            chain.settle()
        self._twin.advance_to(t)
