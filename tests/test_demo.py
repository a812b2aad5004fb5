"""`rig demo`, short: the whole loop on the twin — record, train, evaluate — wired end to end.

This proves the wiring (2 scripted episodes, a few training steps, 1 evaluation episode), not the
success rate, which needs far more training than a test can afford.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policy.checkpoint import latest_checkpoint
from recorder.catalogue import Catalogue


def test_rig_demo_records_trains_and_evaluates(tmp_path: Path) -> None:
    store = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "rig.cli", "demo", "--episodes", "2", "--steps", "3", "--config", "pi0-tiny",
         "--batch-size", "4", "--eval-episodes", "1", "--episode-time", "1", "--store", str(store)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("== 1/3 record", "== 2/3 train", "== 3/3 eval", "== summary"):
        assert stage in result.stdout, stage
    assert "recorded  2 episodes" in result.stdout and "autonomy  " in result.stdout
    catalogue = Catalogue(store / "catalogue.db")
    assert len(catalogue.episodes(exclude_tag="eval")) == 2 and len(catalogue.episodes(tag="eval")) == 1
    run = store / "runs" / "demo-pi0-tiny"
    assert latest_checkpoint(run) is not None
    assert (run / "loss.png").exists() and (run / "success.png").exists()
