"""The simulated ALOHA twin.

A MuJoCo world, virtual Dynamixel chains on pseudo-terminals, software RealSense cameras.
"""
