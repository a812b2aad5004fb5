"""The store's episodes: a sortable, filterable table, a selected episode's details and joint plots,
and replay/delete through the backend."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from recorder.steps import read_steps
from recorder.store import Store, catalogue_of
from rig.app.episodes import episode_labels
from tui.state import Backend, CommandRefused
from tui.widgets.plot import LinePlot, Series

# Joints plotted for the selected episode: (index in the 14-vector, name).
PLOTTED_JOINTS = ((1, "left shoulder"), (2, "left elbow"), (6, "left gripper"), (8, "right shoulder"))
CONFIRM_S = 3.0  # a second `d` within this confirms a delete


@dataclass(frozen=True)
class EpisodeRow:
    """One table row; its fields are the columns, in order, and sort by their own type. The outcome
    comes before the task, whose width varies, so that an 80-column terminal still shows it."""

    id: int
    outcome: str
    task: str
    steps: int
    seconds: float
    status: str
    tags: str
    dropped: int

    def cells(self) -> tuple[str, ...]:
        return tuple(f"{v:.1f}" if isinstance(v, float) else str(v) for v in astuple(self))

    def matches(self, text: str) -> bool:
        text = text.strip().lower()
        return not text or text in self.task.lower() or text in self.outcome.lower()


COLUMNS = tuple(f.name for f in fields(EpisodeRow))


def read_rows(store_dir: Path) -> list[EpisodeRow]:
    """The store's episodes as rows, as `rig episodes` shows them."""
    with catalogue_of(store_dir) as catalogue:
        return [
            EpisodeRow(
                id=e.id,
                task=e.task,
                steps=e.steps or 0,
                seconds=e.duration_s or 0.0,
                status=e.status,
                outcome=e.outcome or "-",
                tags=episode_labels(e, catalogue.segments(e.id)),
                dropped=sum((e.frames_dropped or {}).values()),
            )
            for e in catalogue.episodes()
        ]


class EpisodesScreen(Screen[None]):
    """Without a backend (no rig running) deletes go straight to the store and replay is refused."""

    DEFAULT_CSS = """
    EpisodesScreen #filter { dock: top; }
    EpisodesScreen #episodes { width: 3fr; }
    EpisodesScreen #details { width: 2fr; min-width: 30; border-left: solid $primary; }
    EpisodesScreen #summary { height: auto; }
    EpisodesScreen LinePlot { height: 7; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "replay", "Replay"),
        Binding("d", "delete", "Delete"),
        Binding("R", "refresh", "Refresh"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    sort_column: reactive[str] = reactive("id", init=False)
    sort_reverse: reactive[bool] = reactive(False, init=False)
    filter_text: reactive[str] = reactive("", init=False)
    selected: reactive[int | None] = reactive(None, init=False)

    def __init__(self, store_dir: Path, backend: Backend | None = None) -> None:
        super().__init__()
        self.store_dir = Path(store_dir)
        self.backend = backend
        self.rows: list[EpisodeRow] = []
        self._pending_delete: tuple[int, float] | None = None  # (episode, when `d` was first pressed)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: task or outcome  (/)", id="filter")
        with Horizontal():
            yield DataTable(id="episodes", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="details"):
                yield Static("no episode selected", id="summary")
                for index, name in PLOTTED_JOINTS:
                    yield LinePlot(name, id=f"joint-{index}")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.action_refresh()
        self.query_one(DataTable).focus()

    # ---- the table --------------------------------------------------------------------------------

    @property
    def shown(self) -> list[EpisodeRow]:
        """The rows that pass the filter, in the chosen order."""
        rows = [row for row in self.rows if row.matches(self.filter_text)]
        return sorted(rows, key=lambda row: getattr(row, self.sort_column), reverse=self.sort_reverse)

    def action_refresh(self) -> None:
        try:
            self.rows = read_rows(self.store_dir)
        except Exception as error:  # a missing or newer catalogue: say so, keep the screen
            self.notify(f"cannot read the store: {error}", severity="error")
            self.rows = []
        self._fill()

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        keep = self.selected
        table.clear()
        for column in table.columns.values():  # the sorted column's header shows the order
            name = str(column.label).rstrip(" ▲▼")
            column.label = Text(
                name + ((" ▼" if self.sort_reverse else " ▲") if name == self.sort_column else "")
            )
            column.content_width = max(column.content_width, column.label.cell_len)
        for row in self.shown:
            table.add_row(*row.cells(), key=str(row.id))
        if keep is not None and str(keep) in table.rows:
            table.move_cursor(row=table.get_row_index(str(keep)))
        shown = self.shown
        self.selected = shown[table.cursor_row].id if shown else None

    def watch_sort_column(self) -> None:
        self._fill()

    def watch_sort_reverse(self) -> None:
        self._fill()

    def watch_filter_text(self) -> None:
        self._fill()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        """A click on the sorted column reverses it; on another column sorts by that one."""
        column = COLUMNS[event.column_index]
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False

    def action_sort_next(self) -> None:
        self.sort_column = COLUMNS[(COLUMNS.index(self.sort_column) + 1) % len(COLUMNS)]

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(DataTable).focus()

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.selected = int(event.row_key.value) if event.row_key.value is not None else None

    # ---- the details pane -------------------------------------------------------------------------

    def watch_selected(self, episode_id: int | None) -> None:
        self._pending_delete = None
        summary = self.query_one("#summary", Static)
        plots = {index: self.query_one(f"#joint-{index}", LinePlot) for index, _ in PLOTTED_JOINTS}
        row = next((r for r in self.rows if r.id == episode_id), None)
        if row is None:
            summary.update("no episode selected")
            for plot in plots.values():
                plot.series = ()
            return
        summary.update(Text(self._summary(row)))
        try:
            steps = read_steps(self.store_dir / "episodes" / f"{row.id:06d}")
        except (OSError, ValueError) as error:
            summary.update(Text(f"{self._summary(row)}\nsteps unreadable: {error}"))
            steps = None
        for index, plot in plots.items():
            if steps is None or not len(steps):
                plot.series = ()
                continue
            t = steps["t"] - steps["t"][0]
            plot.series = (
                Series("qpos", t, np.asarray(steps["qpos"][:, index]), "cyan"),
                Series("action", t, np.asarray(steps["action"][:, index]), "magenta"),
            )

    def _summary(self, row: EpisodeRow) -> str:
        streams = "none"
        try:
            with catalogue_of(self.store_dir) as catalogue:
                streams = ", ".join(
                    f"{s.camera} {s.frames_written}f/{s.frames_dropped} dropped"
                    for s in catalogue.streams(row.id)
                )
                notes = catalogue.episode(row.id).notes
        except KeyError:
            notes = ""
        return (
            f"episode {row.id}: {row.task}\n{row.steps} steps, {row.seconds:.1f} s, {row.status}, "
            f"outcome {row.outcome}\ntags {row.tags}\ncameras: {streams or 'none'}"
            + (f"\nnotes: {notes}" if notes else "")
        )

    # ---- commands ---------------------------------------------------------------------------------

    def action_replay(self) -> None:
        if self.selected is None:
            return
        if self.backend is None:
            self.notify("replay needs the rig: start the app with a rig", severity="warning")
            return
        try:
            self.backend.replay(self.selected)
        except CommandRefused as refusal:
            self.notify(str(refusal), title="replay refused", severity="error")
        else:
            self.notify(f"replaying episode {self.selected}")

    def action_delete(self) -> None:
        """The first `d` asks, a second one on the same episode within `CONFIRM_S` deletes."""
        episode_id = self.selected
        if episode_id is None:
            return
        pending, self._pending_delete = self._pending_delete, None
        if pending is None or pending[0] != episode_id or time.monotonic() - pending[1] > CONFIRM_S:
            self._pending_delete = (episode_id, time.monotonic())
            self.notify(f"press d again to delete episode {episode_id}", severity="warning")
            return
        try:
            if self.backend is not None:
                self.backend.delete(episode_id)
            else:
                with Store(self.store_dir, create=False) as store:
                    store.delete_episode(episode_id)
        except (CommandRefused, RuntimeError, KeyError, OSError) as error:
            self.notify(str(error), title="delete refused", severity="error")
            return
        self.notify(f"deleted episode {episode_id}")
        self.action_refresh()
