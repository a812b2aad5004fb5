"""What every operation on the rig starts with: the control loop over opened devices and, when a
store is given, a recorder subscribed to it under a new session of the catalogue.

Recording (rig.app.record), autonomy (rig.app.autonomy) and evaluation build on `RigSession`, so the
set-up is written once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from hardware.devices import Devices
from recorder.recorder import CameraFormat, EpisodeRecorder
from recorder.store import Store
from rig import __version__
from rig.calibration import ArmCalibration
from rig.loop import ControlLoop, LoopConfig
from rig.step import Step


def open_recorder(
    store: Store, devices: Devices, calibrations: Mapping[str, ArmCalibration]
) -> EpisodeRecorder:
    """A recorder into `store`, under a new catalogue session that notes the profile and calibration."""
    profile = devices.profile
    session_id = store.catalogue.start_session(
        profile=profile.name,
        profile_snapshot=Path(profile.source).read_text() if profile.source else "",
        calibration={name: json.loads(c.to_json()) for name, c in calibrations.items()},
        rig_version=__version__,
    )
    cameras = [CameraFormat(name, c.width, c.height) for name, c in profile.cameras.items()]
    return EpisodeRecorder(store, session_id, cameras, profile.rate_hz)


class RigSession:
    """The loop over `devices` and, with a store, a recorder of its steps. `loop.start()` takes the
    arms; `loop.stop()` parks them."""

    def __init__(
        self,
        devices: Devices,
        calibrations: Mapping[str, ArmCalibration],
        store: Store | None,
        config: LoopConfig | None = None,
    ) -> None:
        self.devices = devices
        self.profile = devices.profile
        self.loop = ControlLoop(devices, calibrations, config or LoopConfig())
        self.recorder: EpisodeRecorder | None = None
        if store is not None:
            self.recorder = open_recorder(store, devices, calibrations)
            self.loop.subscribe(self.recorder.on_step)

    def wait(self, seconds: float, until: Callable[..., object] | None = None) -> Step:
        """Let `seconds` pass on the rig clock (sooner when `until()` turns true)."""
        return self.loop.wait_seconds(seconds, None if until is None else lambda _: bool(until()))
