"""The control loop: one thread owns the buses and ticks at the profile's rate.

Each tick: one sync read per bus (leaders and followers), the current mode's action, safety, one
sync write of goals per follower bus, and a `Step` published to whoever listens. Ticks follow an
absolute schedule (deadline k = start + k·dt) on the rig's clock, so a slow tick does not shift
every later one; a tick that ends after the next deadline is an overrun, counted and published.
On the twin the clock is simulated and lock-step, so waiting for a deadline is what runs the
simulation and results do not depend on how fast this machine renders.

What the loop does when things go wrong: a mode that gives no action for a few ticks is replaced
by hold (watchdog); a mode that raises, an overload, an e-stop or a servo that stops answering
makes the followers hold their goal; the reason is in the step's events. A bus that failed is
retried about once a second, so its timeouts do not eat every tick.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from hardware.devices import Devices
from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.control_table import OperatingMode, model_named
from hardware.dynamixel.errors import DynamixelError
from hardware.profile import ArmSpec
from hardware.realsense import CameraError, CameraSpec, RealSenseCamera
from rig.calibration import ArmCalibration
from rig.modes import RAMPS, Hold, Mode, MoveTo, Ramp
from rig.safety import Safety, SafetyConfig
from rig.step import GRIPPER, JOINTS_PER_ARM, SIDES, STATE_DIM, CameraSample, Observation, Step, arm_slice

STEP_TIMEOUT_S = 30.0  # wall seconds one step may take while waiting on the rig clock (the twin, loaded)


@dataclass(frozen=True)
class LoopConfig:
    """How the loop runs; what the robot is (its rest pose, the gripper's current) is in the profile."""

    safety: SafetyConfig = field(default_factory=SafetyConfig)
    rest_s: float = RAMPS.rest_s  # how long the move to the rest pose takes on stop
    retry_s: float = 1.0  # how often a failed bus is tried again
    cameras: bool = True
    stats_window: int = 20_000  # ticks of timing kept for benchmarks
    # How often the interpreter hands the GIL between threads while the loop runs. The default 5 ms
    # lets a busy thread (the twin, a camera) delay a tick's wake-up by that much; 1 ms keeps the
    # period error p99 in tens of microseconds (rig bench loop). None leaves it alone.
    switch_interval_s: float | None = 0.001


@dataclass
class LoopStats:
    """Timing of recent ticks, for `rig bench loop` and the status line."""

    window: int
    ticks: int = 0
    overruns: int = 0
    missed_deadlines: int = 0
    period_error: collections.deque[float] = field(init=False)
    io_s: collections.deque[float] = field(init=False)
    compute_s: collections.deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.period_error = collections.deque(maxlen=self.window)
        self.io_s = collections.deque(maxlen=self.window)
        self.compute_s = collections.deque(maxlen=self.window)


class _Arm:
    """One arm's bus, calibration and last good reading."""

    def __init__(
        self,
        name: str,
        spec: ArmSpec,
        calibration: ArmCalibration,
        port: str,
        reply_clock: Callable[[], float] | None = None,
    ) -> None:
        self.name, self.spec, self.calibration = name, spec, calibration
        self.ids = spec.ids
        motors = {j.id: j.motor for j in spec.joints.values()}
        self.bus = DynamixelBus(port, spec.baudrate, motors=motors, reply_clock=reply_clock)
        units = []
        for joint in spec.joints.values():
            model = model_named(joint.motor)
            # mA per unit; a model that reports load (0.1 % of stall) gets the matching share of stall current
            units.append(model.current_unit_ma or model.stall_current_a)
        self.current_unit = np.array(units)
        self.position = np.zeros(JOINTS_PER_ARM)
        self.velocity = np.zeros(JOINTS_PER_ARM)
        self.current = np.zeros(JOINTS_PER_ARM)
        self.fault: str | None = None
        self.retry_at = 0
        self.torque = False

    def read(self) -> None:
        states = self.bus.sync_read_state(self.ids)
        self.position = self.calibration.positions(states.position)
        self.velocity = self.calibration.velocities(states.velocity)
        self.current = states.current * self.current_unit

    def write(self, goal: np.ndarray) -> None:
        ticks = self.calibration.goal_ticks(goal)
        self.bus.sync_write_goal_position(dict(zip(self.ids, ticks.tolist(), strict=True)))


class ControlLoop:
    """The rig's 50 Hz loop. start() takes the arms; stop() parks them and lets go."""

    def __init__(
        self, devices: Devices, calibrations: Mapping[str, ArmCalibration], config: LoopConfig | None = None
    ) -> None:
        self.devices = devices
        self.config = config or LoopConfig()
        profile = devices.profile
        self.dt = 1.0 / profile.rate_hz
        self._arms = {
            name: _Arm(name, spec, calibrations[name], devices.ports[name], devices.reply_clocks.get(name))
            for name, spec in profile.arms.items()
        }
        self._followers = self._by_side("follower")
        self._leaders = self._by_side("leader") if profile.arms_with_role("leader") else None
        names = [f"{arm.name}.{joint}" for arm in self._followers for joint in arm.spec.joints]
        lower = np.concatenate([arm.calibration.lower for arm in self._followers])
        upper = np.concatenate([arm.calibration.upper for arm in self._followers])
        stall = np.array(
            [
                model_named(j.motor).stall_current_a * 1000
                for arm in self._followers
                for j in arm.spec.joints.values()
            ]
        )
        self.safety = Safety(self.config.safety, names, lower, upper, stall, self.dt)
        self._cameras = (
            {
                name: RealSenseCamera(
                    CameraSpec(name, c.serial, c.width, c.height, c.fps, c.depth),
                    devices.cameras,
                    clock=devices.clock,
                )
                for name, c in profile.cameras.items()
            }
            if self.config.cameras
            else {}
        )
        self.stats = LoopStats(self.config.stats_window)
        self._lock = threading.Lock()
        self._pending: tuple[Mode, float] | None = None
        self._mode: Mode = Hold()
        self._blend: Ramp | None = None  # from the old mode's goal to the new one's
        self._silent_ticks = 0
        self._estop: bool | None = None  # None: released; else whether torque goes off
        self._command = np.zeros(STATE_DIM)
        self._listeners: list[Callable[[Step], None]] = []
        self._latest: Step | None = None
        self._published = threading.Condition()
        self._stop = threading.Event()
        self._parking = False  # the park move has begun (set at the tick it takes over)
        self._parked = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._switch_interval: float | None = None  # the interpreter's, to restore on stop

    def _by_side(self, role: str) -> list[_Arm]:
        arms: dict[str, _Arm] = {arm.spec.side: arm for arm in self._arms.values() if arm.spec.role == role}
        missing = [side for side in SIDES if side not in arms]
        if missing:
            raise ValueError(f"the profile has no {role} arm on the {' and '.join(missing)} side")
        return [arms[side] for side in SIDES]

    # ---- control from other threads ------------------------------------------------------
    def set_mode(self, mode: Mode, ramp_s: float | None = None) -> None:
        """Switch at the next tick boundary, blending to the new mode's goal over `ramp_s` seconds."""
        with self._lock:
            self._pending = (mode, RAMPS.default_s if ramp_s is None else ramp_s)

    @property
    def mode(self) -> Mode:
        return self._mode

    def estop(self, torque_off: bool = False) -> None:
        """Hold now (and cut torque when asked) until release_estop()."""
        with self._lock:
            self._estop = torque_off

    def release_estop(self) -> None:
        """Back to idle: the followers hold where they are, torque on again."""
        with self._lock:
            self._estop = None
            self._pending = (Hold(), 0.0)

    @property
    def estopped(self) -> bool:
        return self._estop is not None

    @property
    def faults(self) -> dict[str, str]:
        """Arm name → why it is not answering, for each arm the loop holds off (status displays)."""
        return {name: arm.fault for name, arm in self._arms.items() if arm.fault is not None}

    def subscribe(self, listener: Callable[[Step], None]) -> None:
        """Called from the loop thread with every step: keep it quick (hand the step to a queue)."""
        self._listeners.append(listener)

    @property
    def latest(self) -> Step | None:
        return self._latest

    def wait_for_step(self, after: int = -1, timeout: float = 5.0) -> Step:
        """The first step with index > after (wall-clock timeout)."""
        with self._published:
            ok = self._published.wait_for(
                lambda: (self._latest is not None and self._latest.index > after) or not self.running, timeout
            )
        if self.error is not None:
            raise RuntimeError(f"the control loop stopped: {self.error}") from self.error
        if not ok or self._latest is None:
            raise TimeoutError(f"no step after {after} within {timeout} s")
        return self._latest

    def wait_seconds(self, seconds: float, until: Callable[[Step], bool] | None = None) -> Step:
        """Let `seconds` pass on the rig clock (simulated time on the twin), or less once `until(step)`
        is true; the last step seen. Each step may take up to STEP_TIMEOUT_S of wall time (a loaded
        machine renders the twin slowly) before this gives up with TimeoutError."""
        step = self.wait_for_step()
        end = step.t + seconds
        while step.t < end and not (until is not None and until(step)):
            step = self.wait_for_step(step.index, timeout=STEP_TIMEOUT_S)
        return step

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> ControlLoop:
        """Open the buses, configure and hold the followers where they are, start the thread."""
        opened: list[_Arm] = []
        try:
            for arm in self._arms.values():
                arm.bus.open()
                opened.append(arm)
                arm.bus.set_torque(arm.ids, False)
                arm.read()
            for arm in self._followers:
                self._configure_follower(arm)
            for camera in self._cameras.values():
                camera.start()
        except BaseException:
            for arm in opened:
                arm.bus.close()
            for camera in self._cameras.values():
                camera.stop()
            raise
        self._command = np.concatenate([arm.position for arm in self._followers])
        if self.config.switch_interval_s is not None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.config.switch_interval_s)
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()
        return self

    def _configure_follower(self, arm: _Arm) -> None:
        """ALOHA's follower set-up: the gripper in current-based position mode with a current limit,
        goals at the present positions, then torque on."""
        gripper_id = list(arm.spec.joints.values())[GRIPPER].id
        arm.bus.set_operating_mode([gripper_id], OperatingMode.CURRENT_BASED_POSITION)
        if "current_limit" in arm.bus.model(gripper_id).items:
            arm.bus.write(gripper_id, "current_limit", self.devices.profile.robot.gripper_current_limit)
        arm.write(arm.position)
        arm.bus.set_torque(arm.ids, True)
        arm.torque = True

    def stop(self, park: bool = True, timeout: float = 60.0) -> None:
        """Move the followers to the rest pose (park) and torque them off, then close everything."""
        if self._thread is None:
            return
        if park and self.running and self._estop is None:
            rest = np.tile(self.devices.profile.robot.rest_pose, len(SIDES))
            self.set_mode(_Park(rest, self.config.rest_s), ramp_s=0.0)
        else:
            self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(5)
        self._thread = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def __enter__(self) -> ControlLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        clock = self.devices.clock
        start = clock.now()
        k = 0
        try:
            while not self._stop.is_set():
                deadline = start + k * self.dt
                clock.sleep_until(deadline)
                began = clock.now()
                missed = int((began - deadline) // self.dt)
                if missed > 0:  # skip deadlines already past rather than bursting to catch up
                    self.stats.missed_deadlines += missed
                    k += missed
                    deadline = start + k * self.dt
                step = self._tick(k, began, began - deadline)
                self._publish(step)
                if clock.now() > deadline + self.dt:
                    self.stats.overruns += 1
                if self._parking and (not isinstance(self._mode, _Park) or self._mode.finished):
                    self._parked = isinstance(self._mode, _Park)  # False: a safety stop cut the move short
                    break
                k += 1
        except BaseException as error:  # published to waiters; the arms are made safe below
            self.error = error
        finally:
            # Torque goes off only at the rest pose: an arm stopped anywhere else keeps holding.
            self._shutdown(torque_off=self._parked)
            with self._published:
                self._published.notify_all()

    def _shutdown(self, torque_off: bool) -> None:
        for arm in self._arms.values():
            try:
                if torque_off and arm.spec.role == "follower":
                    arm.bus.set_torque(arm.ids, False)
            except DynamixelError:
                pass  # nothing more to do for a bus that is gone; the servos keep their last goal
            finally:
                arm.bus.close()
        for camera in self._cameras.values():
            camera.stop()

    def _publish(self, step: Step) -> None:
        with self._published:
            self._latest = step
            self._published.notify_all()
        for listener in self._listeners:
            listener(step)

    # ---- one tick --------------------------------------------------------------------------
    def _tick(self, index: int, t: float, lateness: float) -> Step:
        events: list[str] = []
        io_start = time.perf_counter()
        for arm in self._arms.values():
            self._read(arm, index, events)
        io_s = time.perf_counter() - io_start

        qpos = np.concatenate([arm.position for arm in self._followers])
        qvel = np.concatenate([arm.velocity for arm in self._followers])
        effort = np.concatenate([arm.current for arm in self._followers])
        leader = None if self._leaders is None else np.concatenate([arm.position for arm in self._leaders])
        cameras = self._camera_samples(t, events)
        previous = self._command
        obs = Observation(index, t, qpos, qvel, effort, leader, previous.copy(), cameras)

        self._apply_controls(events)
        goal = self._goal(obs, events)
        goal, limits = self.safety.limit(goal, previous)
        events.extend(limits)
        overloads = self.safety.overloads(effort)
        if overloads:
            events.extend(overloads)
            self._switch(Hold(), 0.0, previous)
            goal = previous
        self._command = goal

        write_start = time.perf_counter()
        for arm in self._followers:
            if arm.fault is None and arm.torque:
                try:
                    arm.write(goal[arm_slice(arm.spec.side)])
                except DynamixelError as error:
                    self._fault(arm, index, str(error), events)
        io_s += time.perf_counter() - write_start

        self.stats.ticks += 1
        self.stats.period_error.append(lateness)
        self.stats.io_s.append(io_s)
        self.stats.compute_s.append(time.perf_counter() - io_start - io_s)
        return Step(
            index=index,
            t=t,
            qpos=qpos,
            qvel=qvel,
            effort=effort,
            action=goal.copy(),
            leader=leader,
            mode=self._mode.name if self._estop is None else "e-stop",
            cameras=cameras,
            period_error_s=lateness,
            overruns=self.stats.overruns,
            events=tuple(events),
            policy_action=self._mode.proposal,  # autonomous: the policy's own action
        )

    def _read(self, arm: _Arm, index: int, events: list[str]) -> None:
        if arm.fault is not None and index < arm.retry_at:
            return
        try:
            try:
                arm.read()
            except DynamixelError:
                arm.read()  # one retry: a single lost reply is noise, two in a row is a fault
        except DynamixelError as error:
            self._fault(arm, index, str(error), events)
            return
        if arm.fault is not None:
            events.append(f"recovered: {arm.name} answers again; holding until a mode is chosen")
            arm.fault = None

    def _fault(self, arm: _Arm, index: int, message: str, events: list[str]) -> None:
        if arm.fault is None:
            events.append(f"fault: {arm.name}: {message} Holding the other arms.")
            self._switch(Hold(), 0.0, self._command)
        arm.fault = message
        arm.retry_at = index + max(1, round(self.config.retry_s / self.dt))

    def _camera_samples(self, t: float, events: list[str]) -> Mapping[str, CameraSample]:
        samples = {}
        for name, camera in self._cameras.items():
            try:
                frame = camera.latest()
            except CameraError as error:
                events.append(f"camera: {error}")
                continue
            if frame is not None:
                samples[name] = CameraSample(
                    frame.color, frame.timestamp_ms, frame.frame_number, t - frame.arrived
                )
        return MappingProxyType(samples)

    def _apply_controls(self, events: list[str]) -> None:
        """Mode switches and e-stops requested since the last tick take effect here, atomically."""
        with self._lock:
            pending, self._pending = self._pending, None
            estop = self._estop
        if estop is not None:
            if estop and any(arm.torque for arm in self._followers):
                for arm in self._followers:
                    self._set_torque(arm, False, events)
                events.append("e-stop: torque off")
            return
        if any(not arm.torque for arm in self._followers):
            for arm in self._followers:  # released after a torque-off e-stop: hold where they are now
                self._set_torque(arm, True, events)
            self._command = np.concatenate([arm.position for arm in self._followers])
        if pending is not None:
            self._switch(pending[0], pending[1], self._command)

    def _set_torque(self, arm: _Arm, on: bool, events: list[str]) -> None:
        try:
            if on:
                arm.write(arm.position)
            arm.bus.set_torque(arm.ids, on)
            arm.torque = on
        except DynamixelError as error:
            events.append(f"fault: {arm.name}: {error}")

    def _switch(self, mode: Mode, ramp_s: float, origin: np.ndarray) -> None:
        self._mode = mode
        self._parking = self._parking or isinstance(mode, _Park)
        self._silent_ticks = 0
        ticks = round(ramp_s / self.dt)
        self._blend = Ramp(origin, ticks) if ticks > 0 else None

    def _goal(self, obs: Observation, events: list[str]) -> np.ndarray:
        if self._estop is not None:
            events.append("e-stop: holding")
            return obs.command
        if any(arm.fault is not None for arm in self._arms.values()):
            return obs.command
        try:
            action = self._mode.action(obs)
            events.extend(self._mode.take_events())
        except Exception as error:
            events.append(f"watchdog: mode {self._mode.name} failed ({error!r}); holding")
            self._switch(Hold(), 0.0, obs.command)
            return obs.command
        if action is None or not np.all(np.isfinite(action)):
            self._silent_ticks += 1
            what = "no action" if action is None else "a non-finite action"
            if self._silent_ticks >= self.config.safety.watchdog_ticks:
                events.append(
                    f"watchdog: mode {self._mode.name} gave {what} for {self._silent_ticks} ticks; holding"
                )
                self._switch(Hold(), 0.0, obs.command)
            return obs.command
        self._silent_ticks = 0
        action = np.asarray(action, dtype=np.float64)
        if self._blend is not None:
            action = self._blend.toward(action)
            if self._blend.done:
                self._blend = None
        return action


class _Park(MoveTo):
    """The stop sequence's mode: to the rest pose, a moment to settle there, then the loop ends."""

    name = "park"
    SETTLE_S = 0.5

    def action(self, obs: Observation) -> np.ndarray | None:
        goal = super().action(obs)
        assert self._start is not None
        self.finished = obs.t >= self._start[0] + self._duration + self.SETTLE_S
        return goal
