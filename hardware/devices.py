"""Opens what a profile names, real or simulated, and hands the layers above the same things either
way: a serial port per arm, a directory of RealSense cameras, and the clock to schedule on.

This is the one place that knows whether the rig is the twin. Code above `hardware/` asks for
`open_devices(profile)` and drives what it gets through the real drivers, with the clocks it is
given: `clock` to schedule on, and per arm a `reply_clocks` entry for the bus's reply timeout (the
twin's servo chains answer from a thread, so on a loaded machine the wall clock would call a reply
late that the twin's world never waited for).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from hardware.clock import Clock, WallClock
from hardware.profile import Profile
from hardware.realsense import CameraDirectory

if TYPE_CHECKING:
    from hardware.sim.twin import Twin


@dataclass
class Devices:
    profile: Profile
    ports: Mapping[str, str]
    cameras: CameraDirectory
    clock: Clock
    twin: Twin | None = field(
        default=None, repr=False
    )  # the operator's handle on a simulated rig; None on hardware
    # Arm name -> the clock (s) its bus's reply timeout runs on; an arm without one uses the wall clock.
    reply_clocks: Mapping[str, Callable[[], float]] = field(default_factory=dict)

    def close(self) -> None:
        if self.twin is not None:
            self.twin.close()

    def __enter__(self) -> Devices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_devices(profile: Profile, lockstep: bool | None = None) -> Devices:
    """The profile's devices; for a twin profile, a started twin: lock-step on its simulated clock
    (unless the profile or `lockstep=False` says otherwise: then free-running on the wall clock)."""
    if profile.twin is None:
        return Devices(
            profile=profile,
            ports=MappingProxyType({name: arm.port for name, arm in profile.arms.items()}),
            cameras=CameraDirectory(),
            clock=WallClock(),
        )
    from hardware.sim.twin import Twin  # MuJoCo loads only for twin profiles

    twin = Twin(profile, lockstep=lockstep).start()
    return Devices(
        profile=profile,
        ports=MappingProxyType(twin.ports),
        cameras=CameraDirectory(software_devices=twin.camera_devices),
        clock=twin.clock if twin.lockstep else WallClock(),
        twin=twin,
        reply_clocks=MappingProxyType({name: chain.quiet_time for name, chain in twin.chains.items()}),
    )
