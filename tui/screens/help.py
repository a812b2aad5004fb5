"""The keys, on `?` from any screen: an operator under stress should not have to remember them."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

KEYS = """\
# Keys

**E-stop: space** (when no text field has focus) or **ctrl+e** (always). The followers hold where
they are. **ctrl+r** twice within 3 s releases it.

| key | everywhere |
|---|---|
| F1 F2 F3 F4 | Record, Episodes, Train, Run |
| Tab / click | enter a text field; Enter or Esc leaves it |
| ? | this help |
| ctrl+q | quit (the rig parks and closes); while training runs, twice (the run saves first) |

| key | Record |
|---|---|
| → | start an episode; while recording: end it and start the next |
| ← | discard the episode being recorded and record it again |
| Esc | end the episode |
| s / f | mark the last finished episode a success / a failure |

| key | Train |
|---|---|
| s | start a new run with the model, steps and batch in the fields |
| x | stop the run (it saves a checkpoint at the current step) |
| r | resume the run, this session's or the newest with a checkpoint on disk, to the steps in the field |

| key | Run |
|---|---|
| a | start the policy named in the field (a checkpoint folder or tcp://host:port); again: stop it |
| t | take both arms over from the policy; again: hand them back |

A policy warms up and is timed before it takes the arms; the Run screen shows its time per chunk,
and one slower than the rig needs is refused with that figure. Moving a leader arm during autonomy
also takes that arm over. Esc closes this help.
"""


class HelpScreen(ModalScreen[None]):
    """A modal over the current screen. A modal hides the app's plain bindings, so it repeats the
    space-bar e-stop (ctrl+e is a priority binding and works anyway)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
        Binding("space", "app.estop", "E-STOP"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(KEYS)
