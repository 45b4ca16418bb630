"""TableView: the widget every tabular view shares (filter with `/`, sort with `s`, detail pane).

A view subclasses it with its columns and three pure functions of ViewData: `rows`,
`summary` and `detail`.
Refreshing updates only the cells that changed, so the cursor, scroll position and a
255-runner table survive a refresh every two seconds.
The table never needs horizontal scrolling: `fit_columns` narrows the columns a view lets be cut
(their cells end in `…`; the detail pane has them whole), then gives up the columns it names as
the least useful, until the table fits its width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.events import Resize
from textual.widgets import DataTable, Input, Static

from krnet.core.model.text import printable
from krnet.tui.model import ViewData


@dataclass(frozen=True)
class Row:
    """One table row: a stable key, the cells shown, and the values each column sorts by."""

    key: str
    cells: tuple[RenderableType, ...]
    sort: tuple[Any, ...]

    def __post_init__(self) -> None:
        # DataTable reads a str cell as markup: a hostname `[/]` would crash the view and
        # `[reverse]x` be drawn styled. Cells are network strings: text, escaped.
        cells = tuple(Text(printable(c)) if isinstance(c, str) else c for c in self.cells)
        object.__setattr__(self, "cells", cells)

    def matches(self, needle: str) -> bool:
        return any(needle in _plain(cell).lower() for cell in self.cells)


def _plain(cell: RenderableType) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def filtered_sorted(
    rows: Sequence[Row], needle: str, column: int | None, reverse: bool
) -> list[Row]:
    """The rows matching `needle` (case-insensitive), ordered by `column` when one is set."""
    needle = needle.strip().lower()
    shown = [row for row in rows if row.matches(needle)] if needle else list(rows)
    if column is not None:
        shown.sort(key=lambda row: _sort_key(row.sort[column]), reverse=reverse)
    return shown


Layout = tuple[tuple[str, int], ...]  # the columns shown, in order, each with its width


def natural_widths(columns: Sequence[str], rows: Sequence[Row]) -> dict[str, int]:
    """The width each column needs to show its header and every cell whole."""
    return {
        label: max(cell_len(label), *(cell_len(_plain(row.cells[i])) for row in rows))
        for i, label in enumerate(columns)
    }


def fit_columns(
    natural: Mapping[str, int],
    available: int,
    squeeze: Mapping[str, int],
    drop: Sequence[str],
    padding: int = 2,
) -> Layout:
    """The columns that fit in `available` cells, each column taking `padding` more.

    First the `squeeze` columns narrow (the widest first, none below its minimum); when that is
    not enough, the `drop` columns go, in that order, and the squeezed ones widen again into the
    room they leave.
    """
    shown = list(natural)
    for gone in (None, *drop):
        if gone is not None:
            shown.remove(gone)
        widths = {label: natural[label] for label in shown}
        over = sum(widths.values()) + padding * len(shown) - available
        while over > 0:
            narrowable = [c for c in squeeze if c in widths and widths[c] > squeeze[c]]
            if not narrowable:
                break
            widest = max(narrowable, key=widths.__getitem__)
            widths[widest] -= 1
            over -= 1
        if over <= 0:
            break
    return tuple(widths.items())


def _fitted(cell: RenderableType) -> RenderableType:
    """A cell on one line, cut with `…` when its column is narrower."""
    if isinstance(cell, str):
        return Text(cell, no_wrap=True, overflow="ellipsis", end="")
    if isinstance(cell, Text):
        fitted = cell.copy()
        fitted.no_wrap, fitted.overflow, fitted.end = True, "ellipsis", ""
        return fitted
    return cell


def _sort_key(value: Any) -> tuple[int, Any]:
    """None last; numbers before text so a column of either sorts without a TypeError."""
    if value is None:
        return (2, 0)
    return (0, value) if isinstance(value, int | float) else (1, str(value))


class TableView(Vertical):
    """A filterable, sortable table between a summary line and a detail pane."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    # what a view supplies: its columns and three pure functions of ViewData (as staticmethods)
    COLUMNS: ClassVar[tuple[str, ...]] = ()
    # how it fits a narrow terminal: the columns that may be cut (to at least that many cells),
    # and those given up when cutting is not enough, least useful first (see fit_columns)
    SQUEEZE: ClassVar[Mapping[str, int]] = {}
    DROP: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def rows(data: ViewData) -> list[Row]:
        raise NotImplementedError

    @staticmethod
    def summary(data: ViewData) -> RenderableType:
        raise NotImplementedError

    @staticmethod
    def detail(data: ViewData, key: str | None) -> RenderableType:
        raise NotImplementedError

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id, classes="table-view")
        self.data: ViewData | None = None
        self.needle = ""
        self.sort_column: int | None = None
        self.reverse = False
        self._cells: dict[str, tuple[RenderableType, ...]] = {}
        self._layout: Layout = ()
        self._widest: dict[str, int] = {}  # natural widths seen so far: columns never jitter

    # -- widgets ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield Input(placeholder="filter (Enter: keep, Esc: clear)", classes="filter")
        table: DataTable[RenderableType] = DataTable(cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(classes="status")
        yield Static(classes="detail")

    @property
    def table(self) -> DataTable[RenderableType]:
        return self.query_one(DataTable)

    @property
    def filter_input(self) -> Input:
        return self.query_one(Input)

    def highlighted_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value) if key.value is not None else None

    # -- refresh ----------------------------------------------------------------------------------

    def show(self, data: ViewData) -> None:
        """Redraw from a new refresh."""
        self.data = data
        self.query_one(".summary", Static).update(self.summary(data))
        self._redraw()

    def _redraw(self) -> None:
        if self.data is None:
            return
        all_rows = self.rows(self.data)
        rows = filtered_sorted(all_rows, self.needle, self.sort_column, self.reverse)
        self._sync(rows, self._fit(all_rows))
        self.query_one(".status", Static).update(self._status(len(rows), len(all_rows)))
        self._show_detail()

    def _fit(self, rows: list[Row]) -> Layout:
        """The layout for the width this view has now (the screen's, before its first layout)."""
        natural = natural_widths(self.COLUMNS, rows)
        self._widest = {c: max(w, self._widest.get(c, 0)) for c, w in natural.items()}
        table = self.table
        width = self.size.width or self.app.size.width
        available = width - table.styles.scrollbar_size_vertical
        return fit_columns(self._widest, available, self.SQUEEZE, self.DROP, 2 * table.cell_padding)

    def _sync(self, rows: list[Row], layout: Layout) -> None:
        table = self.table
        keep = self.highlighted_key()
        if layout != self._layout:
            table.clear(columns=True)
            for label, width in layout:
                table.add_column(label, key=label, width=width)
            self._layout, self._cells = layout, {}
        shown = [(label, self.COLUMNS.index(label)) for label, _width in layout]
        keys = [row.key for row in rows]
        if keys == list(self._cells):
            for row in rows:
                old = self._cells[row.key]
                for label, i in shown:
                    if row.cells[i] != old[i]:
                        table.update_cell(row.key, label, _fitted(row.cells[i]))
        else:
            table.clear()
            for row in rows:
                table.add_row(*(_fitted(row.cells[i]) for _label, i in shown), key=row.key)
            if keep in keys:
                table.move_cursor(row=keys.index(keep), animate=False)
        self._cells = {row.key: row.cells for row in rows}

    def _status(self, shown: int, total: int) -> Text:
        parts = [f"{shown} of {total}" if shown != total else f"{total} rows"]
        if self.needle:
            parts.append(f"filter “{self.needle}”")
        if self.sort_column is not None:
            arrow = "▼" if self.reverse else "▲"
            parts.append(f"sorted by {self.COLUMNS[self.sort_column]} {arrow}")
        return Text(" · ".join(parts), style="dim")

    def _show_detail(self) -> None:
        if self.data is not None:
            detail = self.detail(self.data, self.highlighted_key())
            self.query_one(".detail", Static).update(detail)

    # -- events and actions -----------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(self.COLUMNS.index(str(event.column_key.value)))

    def on_resize(self, event: Resize) -> None:
        self._redraw()

    def sort_by(self, column: int) -> None:
        """Sort by `column`; the same column again flips the order."""
        self.reverse = not self.reverse if column == self.sort_column else False
        self.sort_column = column
        self._redraw()

    def action_sort(self) -> None:
        """Cycle the sort column: unsorted, then each column in turn."""
        column = 0 if self.sort_column is None else self.sort_column + 1
        self.sort_column = None if column >= len(self.COLUMNS) else column
        self.reverse = False
        self._redraw()

    def action_filter(self) -> None:
        self.filter_input.add_class("shown")
        self.filter_input.focus()

    def action_clear_filter(self) -> None:
        self.filter_input.value = ""
        self.filter_input.remove_class("shown")
        self.table.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.needle = event.value
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()
