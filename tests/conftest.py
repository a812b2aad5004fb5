"""Shared test settings."""

from __future__ import annotations

import pytest
from dynamixel_sdk import port_handler


@pytest.fixture(autouse=True)
def patient_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give servo replies 100 ms instead of the SDK's 34 ms (2 x its 16 ms LATENCY_TIMER + 2).

    Plain dynamixel-sdk clients poll the port in a busy loop; when the virtual chain answers from a
    thread of the same process, on a 2-core machine busy with other work, 34 ms is sometimes not
    enough. Only the cost of an expected timeout changes, never what is on the wire.
    """
    monkeypatch.setattr(port_handler, "LATENCY_TIMER", 49)
