"""TableView: the widget every tabular view shares (filter with `/`, sort with `s`, detail pane).

A view subclasses it with its columns and three pure functions of ViewData: `rows`,
`summary` and `detail` (rows are krnet.tui.rows.Row).
A refresh costs the UI thread in proportion to what changed and what is in view, not to the
rows there are: column widths grow from the rows that are new or changed (each row measured
once), changed cells go into the Grid in one step, and only the rows in view are drawn, so the
cursor, scroll position and a table of 4,095 runners survive a refresh every two seconds.
The table never needs horizontal scrolling: `fit_columns` narrows the columns a view lets be cut
(their cells end in `…`; the detail pane has them whole), then gives up the columns it names as
the least useful, until the table fits its width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.events import Resize
from textual.widgets import DataTable, Input, Static

from krnet.tui.grid import Change, Grid
from krnet.tui.model import ViewData
from krnet.tui.rows import Layout, Row, filtered_sorted, fit_columns, fitted, widest


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
        self._built: tuple[ViewData, list[Row]] | None = None  # the rows of `data`, made once
        self._measured: dict[str, Row] = {}  # each row as last measured, by key
        self._held: dict[str, Row] = {}  # the rows the grid holds, in its order
        self._layout: Layout = ()
        self._widest: dict[str, int] = {}  # natural widths seen so far: columns never jitter
        self._needs: dict[str, tuple[int, int]] = {}  # each Static's width and lines, last put

    # -- widgets ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(classes="summary")
        yield Input(placeholder="filter (Enter: keep, Esc: clear)", classes="filter")
        yield Grid(cursor_type="row", zebra_stripes=True)
        yield Static(classes="status")
        yield Static(classes="detail")

    @property
    def table(self) -> Grid:
        return self.query_one(Grid)

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
        self._put(".summary", self.summary(data))
        self._redraw()

    def _redraw(self) -> None:
        if self.data is None:
            return
        all_rows = self._rows_of(self.data)
        rows = filtered_sorted(all_rows, self.needle, self.sort_column, self.reverse)
        self._sync(rows, self._fit())
        self._put(".status", self._status(len(rows), len(all_rows)))
        self._show_detail()

    def take_rows(self, data: ViewData, rows: list[Row]) -> None:
        """Hold `rows`, made from `data` (by the gather worker, off the UI thread, or by
        `_rows_of`), and grow the column widths by their cells that are new or changed."""
        if self._built is not None and self._built[0] is data:
            return
        self._widest = widest(self.COLUMNS, rows, self._measured, self._widest)
        self._measured = {row.key: row for row in rows}
        self._built = (data, rows)

    def _rows_of(self, data: ViewData) -> list[Row]:
        """The rows of `data`, made here unless the worker made them (once however often it is
        redrawn)."""
        built = self._built
        if built is not None and built[0] is data:
            return built[1]
        rows = self.rows(data)
        self.take_rows(data, rows)
        return rows

    def _fit(self) -> Layout:
        """The layout for the width this view has now (the screen's, before its first layout)."""
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
            self._layout, self._held = layout, {}
        shown = [(label, self.COLUMNS.index(label)) for label, _width in layout]
        keys = [row.key for row in rows]
        if keys == list(self._held):
            table.replace_cells(self._changes(rows, shown))
        else:
            table.clear()
            for row in rows:
                table.add_row(*(fitted(row.cells[i]) for _label, i in shown), key=row.key)
            if keep in keys:
                table.move_cursor(row=keys.index(keep), animate=False)
        self._held = {row.key: row for row in rows}

    def _changes(self, rows: list[Row], shown: list[tuple[str, int]]) -> list[Change]:
        """The cells of `rows` that differ from what the grid holds."""
        changes: list[Change] = []
        for row in rows:
            old = self._held[row.key].cells
            if old is not row.cells:
                changes += [
                    (row.key, c, fitted(row.cells[i])) for c, i in shown if row.cells[i] != old[i]
                ]
        return changes

    def _put(self, selector: str, content: RenderableType) -> None:
        """Update a Static only when its content changed, and lay out the screen only when that
        changed the lines it needs (a layout costs about what drawing the whole screen does)."""
        static = self.query_one(selector, Static)
        if static.content == content:
            return
        static.update(content, layout=False)
        width = static.content_region.width
        needs = (width, static.get_content_height(self.size, self.app.size, width))
        if self._needs.get(selector) != needs or not width:
            static.refresh(layout=True)
        self._needs[selector] = needs

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
            self._put(".detail", self.detail(self.data, self.highlighted_key()))

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
