"""A one-line text field that hands the keys back to the screen when the operator is done typing."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input


class Field(Input):
    """An Input that gives up focus on Enter or Esc: the screen's single-key commands (→, ←, s, a, the
    space bar e-stop) only work while no text field has focus, so leaving one must be one key."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "leave", "Done", show=False)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Entering the field puts the cursor at the end: the first key typed (a space) must not
        replace the whole text, as Input's select-on-focus would."""
        kwargs.setdefault("select_on_focus", False)
        super().__init__(*args, **kwargs)

    async def action_submit(self) -> None:
        await super().action_submit()
        self.action_leave()

    def action_leave(self) -> None:
        self.screen.set_focus(None)
