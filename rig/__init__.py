"""A teleoperation rig: profile, calibration, the 50 Hz loop, modes, safety; and the `rig` command."""

__version__ = "0.1.0"
