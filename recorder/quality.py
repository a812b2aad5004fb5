"""Whether an episode is a demonstration at all, judged from its own steps.

An episode can be recorded while the arms did nothing useful: a servo stopped answering and the
loop made the arms hold (`faulted`), the loop was not driving them for part of it (`idle`: a safety
trip, the watchdog, an e-stop), or the followers never moved (`still`). Such an episode is flagged
in the catalogue with the reason in words, shown by `rig episodes`, and left out of training unless
asked (`rig train --include-flagged`): its actions teach a policy to stand still.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rig.step import MODES

FLAGS = ("faulted", "idle", "still")
FAULT_EVENT = "fault:"  # how the loop's step events begin when a servo stops answering or reports an error
DRIVING_MODES = ("teleop", "autonomous", "intervention")  # modes in which something moves the followers
# A switch asked for just before an episode begins takes effect at the next tick: a few ticks of the
# old mode at the start are not a hold worth flagging.
IDLE_TOLERANCE_S = 0.1
STILL_TRAVEL = 0.02  # rad (joints) or opening (grippers): less on every joint is standing still


def judge_episode(records: np.ndarray, events: Sequence[str] = (), rate_hz: float = 50.0) -> dict[str, str]:
    """Flag -> why, for each of `FLAGS` that the episode's step records (recorder/steps.py) and the
    loop's events during it show; empty for a good episode. Records of a layout without `mode`
    (recorded before it existed) are not judged idle."""
    flags: dict[str, str] = {}
    faults = [event for event in events if event.startswith(FAULT_EVENT)]
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        flags["faulted"] = faults[0].removeprefix(FAULT_EVENT).strip() + more
    if held := _held(records, rate_hz):
        flags["idle"] = held
    if still := _still(records):
        flags["still"] = still
    return flags


def describe_flags(flags: Mapping[str, str], width: int = 80) -> str:
    """One phrase for a summary line: `flagged idle (...), still (...)`, each reason cut to `width`
    characters (`rig show` gives them whole)."""
    cut = {flag: why if len(why) <= width else why[: width - 1] + "…" for flag, why in flags.items()}
    return "flagged " + ", ".join(f"{flag} ({why})" for flag, why in cut.items()) if flags else ""


def _held(records: np.ndarray, rate_hz: float) -> str | None:
    if "mode" not in (records.dtype.names or ()) or not len(records):
        return None
    driving = np.isin(records["mode"], [MODES.index(mode) for mode in DRIVING_MODES])
    held = np.flatnonzero(~driving)
    if len(held) < max(1, round(IDLE_TOLERANCE_S * rate_hz)):
        return None
    code = int(records["mode"][held[0]])
    mode = MODES[code] if 0 <= code < len(MODES) else "unknown"
    seconds, total = len(held) / rate_hz, len(records) / rate_hz
    return f"not driven for {seconds:.1f} of {total:.1f} s, {mode} from step {int(held[0])}"


def _still(records: np.ndarray) -> str | None:
    if not len(records):
        return "no steps"
    travel = float(np.ptp(records["qpos"], axis=0).max())
    if travel >= STILL_TRAVEL:
        return None
    return f"the followers never moved: every joint within {travel:.3f}"
