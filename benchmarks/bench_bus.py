"""Sync-read round trip on the twin's virtual bus, through plain dynamixel-sdk.

    .venv/bin/python benchmarks/bench_bus.py [--reads 2000] [--ids 9]

Measures two set-ups: a bare virtual chain (the protocol path alone), and `rig sim` in another
process, free-running with its physics (what a client of the twin sees; its cameras render only
for readers in its own process, librealsense software devices being process-local).
Prints median, p99 and max in milliseconds, and the count of timeouts.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time

from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

from hardware.dynamixel.control_table import SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH, model_named
from hardware.sim.servo import HeldJoint, VirtualServo
from hardware.sim.servo_chain import VirtualServoChain


def measure(port_path: str, ids: list[int], reads: int) -> tuple[list[float], int]:
    port = PortHandler(port_path)
    assert port.openPort() and port.setBaudRate(1_000_000)
    group = GroupSyncRead(port, PacketHandler(2.0), SYNC_STATE_ADDRESS, SYNC_STATE_LENGTH)
    for servo_id in ids:
        group.addParam(servo_id)
    times, failures = [], 0
    for _ in range(reads):
        start = time.perf_counter()
        ok = group.txRxPacket() == COMM_SUCCESS
        times.append((time.perf_counter() - start) * 1e3)
        failures += not ok
        time.sleep(0.002)  # leave the responder idle between reads, as a 50 Hz loop does
    port.closePort()
    return times, failures


def report(label: str, times: list[float], failures: int) -> None:
    ordered = sorted(times)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    print(
        f"{label:<44} n={len(times):5d}  median {statistics.median(times):6.3f} ms  "
        f"p99 {p99:6.3f} ms  max {ordered[-1]:7.3f} ms  timeouts {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--ids", type=int, default=9, help="servos in the sync read")
    args = parser.parse_args()
    ids = list(range(1, args.ids + 1))

    model = model_named("XM540-W270")
    with VirtualServoChain("bench", [VirtualServo(i, model, HeldJoint(0.01 * i)) for i in ids]) as chain:
        report(f"bare chain, {len(ids)} ids, 126..135", *measure(chain.port, ids, args.reads))

    sim = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "sim", "--profile", "aloha-sim"], stdout=subprocess.PIPE, text=True
    )
    assert sim.stdout is not None
    ports = {}
    for line in sim.stdout:
        if line.strip() == "ready":
            break
        key, _, value = line.strip().rpartition(" ")
        ports[key] = value
    try:
        follower_ids = [1, 2, 4, 6, 7, 8, 9]
        label = f"rig sim (free-running, nobody streaming), {len(follower_ids)} ids"
        report(label, *measure(ports["follower_left"], follower_ids, args.reads))
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=30)


if __name__ == "__main__":
    main()
