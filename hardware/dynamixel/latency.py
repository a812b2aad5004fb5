"""The FTDI latency timer: USB serial adapters batch bytes for 16 ms by default, which turns a
1 ms sync read into 16 ms and makes a 50 Hz loop miss its period. ALOHA needs it at 1 ms."""

from __future__ import annotations

import os
from pathlib import Path

USB_SERIAL_SYSFS = Path("/sys/bus/usb-serial/devices")


def latency_timer_file(port: str, sysfs: Path = USB_SERIAL_SYSFS) -> Path | None:
    """The sysfs file that holds the port's latency timer, or None for ports that have none (ptys, ACM)."""
    tty = os.path.basename(os.path.realpath(port))
    candidate = sysfs / tty / "latency_timer"
    return candidate if candidate.exists() else None


def latency_timer_warning(port: str, sysfs: Path = USB_SERIAL_SYSFS) -> str | None:
    """A warning with the fixing command when the port's latency timer is not 1 ms; None when fine or n/a."""
    path = latency_timer_file(port, sysfs)
    if path is None:
        return None
    value = path.read_text().strip()
    if value == "1":
        return None
    return (
        f"{port}: FTDI latency timer is {value} ms, not 1 ms, so every bus read waits that long. "
        f"Fix now: `echo 1 | sudo tee {path}`; for good, add a udev rule: "
        'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1"'
    )
