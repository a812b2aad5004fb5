"""Camera frame rate of the twin, read through hardware/realsense as the rig reads it.

    .venv/bin/python benchmarks/bench_cameras.py [--steps 100] [--sizes 224x224 480x640]

A lock-step twin with the aloha-sim cameras (top and both wrists) at each size advances its clock
in 50 Hz steps; every camera renders a frame per step (50 fps of simulated time) and a
RealSenseCamera per serial receives it. Prints frames received per wall-clock second per camera,
the simulated-to-wall time ratio, and the render cost per frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from hardware.devices import open_devices
from hardware.profile import load_profile
from hardware.realsense import CameraSpec, RealSenseCamera


def run(width: int, height: int, steps: int) -> None:
    base = load_profile("aloha-sim")
    cameras = {
        name: dataclasses.replace(c, width=width, height=height, fps=50) for name, c in base.cameras.items()
    }
    profile = dataclasses.replace(base, cameras=cameras)
    with open_devices(profile, lockstep=True) as devices:
        readers = [
            RealSenseCamera(CameraSpec(name, c.serial, c.width, c.height, c.fps), devices.cameras)
            for name, c in cameras.items()
        ]
        for reader in readers:
            reader.start()
        clock = devices.clock
        clock.sleep_until(clock.now() + 0.1)  # warm-up: renderers and GL contexts are created here
        received_before = [r.frames_received for r in readers]
        wall_start, sim_start = time.perf_counter(), clock.now()
        for _ in range(steps):
            clock.sleep_until(clock.now() + 0.02)
        time.sleep(0.05)  # let the last frames reach the camera threads
        wall = time.perf_counter() - wall_start
        simulated = clock.now() - sim_start
        received = [r.frames_received - b for r, b in zip(readers, received_before, strict=True)]
        for reader in readers:
            reader.stop()
    per_camera = ", ".join(f"{r.spec.name} {n / wall:5.1f}" for r, n in zip(readers, received, strict=True))
    total = sum(received)
    print(
        f"{height}x{width}: {len(readers)} cameras, {total} frames in {wall:.2f} s wall "
        f"for {simulated:.2f} s simulated "
        f"(x{simulated / wall:.2f} real time); frames/s per camera: {per_camera}; "
        f"{1000 * wall / max(total, 1):.1f} ms wall per frame (render + physics + transport)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100, help="50 Hz steps per size")
    parser.add_argument("--sizes", nargs="+", default=["224x224", "480x640"], help="HEIGHTxWIDTH")
    args = parser.parse_args()
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        run(width, height, args.steps)


if __name__ == "__main__":
    main()
