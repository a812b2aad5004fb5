"""Devices: Dynamixel buses, RealSense cameras, rig profiles and the simulated twin.

Imports nothing of ours."""
