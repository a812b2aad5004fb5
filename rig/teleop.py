"""`rig teleop`: headless teleoperation with a one-line live status.

The followers first move slowly to the leaders' pose (the engage ramp), then copy them. On the
twin nobody holds the leaders, so the scripted operator demonstrates the profile's task on them.
Stops after `seconds` on the rig's clock or at ^C, parking the followers at the rest pose.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from hardware.devices import Devices, open_devices
from hardware.profile import Task, load_profile
from rig.calibration import ArmCalibration, CalibrationStore, default_calibration_dir
from rig.loop import ControlLoop, LoopConfig
from rig.modes import RAMPS, Teleop
from rig.step import Step


def load_calibrations(devices: Devices, directory: Path | None = None) -> dict[str, ArmCalibration]:
    """Each arm's stored calibration, or its profile default where none was made."""
    store = CalibrationStore(directory or default_calibration_dir())
    profile = devices.profile
    return {name: store.load(profile.name, name, arm, profile.robot) for name, arm in profile.arms.items()}


@dataclass
class StatusLine:
    """Summarises the steps of the last half second in one line: rate, period error, overruns."""

    write: Callable[[str], None]
    every_s: float = 0.5
    _times: list[float] = field(default_factory=list)
    _errors: list[float] = field(default_factory=list)
    _events: str = ""

    def __call__(self, step: Step) -> None:
        self._times.append(step.t)
        self._errors.append(step.period_error_s)
        if step.events:
            self._events = step.events[-1]
        if step.t - self._times[0] >= self.every_s:
            rate = (len(self._times) - 1) / (self._times[-1] - self._times[0])
            p99 = max(0.0, float(np.percentile(self._errors, 99)) * 1e3)  # lock-step: -1e-17 is zero
            estop = "ON" if step.mode == "e-stop" else "off"
            self.write(
                f"t {step.t:7.2f} s | {rate:5.1f} Hz | period error p99 {p99:5.2f} ms | "
                f"overruns {step.overruns} | e-stop {estop} | {step.mode} | {self._events[:60]}"
            )
            self._times, self._errors, self._events = [], [], ""


def run_teleop(
    profile_name: str,
    seconds: float | None,
    task: Task | None,
    calibration_dir: Path | None,
    cameras: bool,
    out: TextIO,
) -> int:
    profile = load_profile(profile_name)
    if task is not None and profile.twin is not None:
        profile = dataclasses.replace(profile, twin=dataclasses.replace(profile.twin, task=task))
    stop = threading.Event()
    with open_devices(profile) as devices:
        loop = ControlLoop(devices, load_calibrations(devices, calibration_dir), LoopConfig(cameras=cameras))
        end = [float("inf")]
        interactive = out.isatty()

        def show(line: str) -> None:
            out.write(("\r" + line) if interactive else line + "\n")
            out.flush()

        loop.subscribe(StatusLine(show))
        loop.subscribe(lambda step: stop.set() if step.t >= end[0] else None)
        operator = None
        loop.start()
        first = loop.wait_for_step()
        if seconds is not None:
            end[0] = first.t + seconds
        loop.set_mode(Teleop(), ramp_s=RAMPS.teleop_s)
        if devices.twin is not None:
            from rig.operator import ScriptedOperator

            operator = ScriptedOperator(devices.twin)
            operator.demonstrate(delay=RAMPS.teleop_s)
        try:
            while not stop.wait(0.2) and loop.running:
                pass
        except KeyboardInterrupt:
            pass
        finally:
            loop.stop()
        out.write("\n")
        if loop.error is not None:
            print(f"rig teleop: the loop stopped: {loop.error}", file=sys.stderr)
            return 1
        if operator is not None:
            best = devices.twin.world.max_reward if devices.twin is not None else "?"
            print(
                f"scripted operator: reward {operator.max_reward}/{best}, success {operator.success}",
                file=out,
            )
    return 0
