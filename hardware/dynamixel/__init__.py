"""Dynamixel Protocol 2.0: control tables, packet codec, and a bus over dynamixel-sdk."""
