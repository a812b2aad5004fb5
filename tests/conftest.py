"""Shared test settings."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real π0 checkpoint, small and untrained: pi0-tiny after one step on a synthetic store."""
    from synthetic_store import write_synthetic_store

    from policy.train import TrainSettings, train

    root = write_synthetic_store(tmp_path_factory.mktemp("pi0-store"), episodes=2, steps=40)
    settings = TrainSettings(
        store=root, config="pi0-tiny", steps=1, batch_size=4, workers=0, out=root / "run"
    )
    return train(settings, say=lambda _: None).checkpoint
