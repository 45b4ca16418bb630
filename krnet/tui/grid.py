"""Grid: the DataTable every table view draws in, made to refresh thousands of rows cheaply.

DataTable already draws only the rows in view (it is a ScrollView on the Line API), but a
refresh through its public calls costs per row: `update_cell` bumps one update count that
every render cache is keyed on, so each call throws away every cell drawn so far, and a new row
has each of its cells measured even though every column here has a fixed width. Grid replaces
a refresh's changed cells in one step that forgets only the renders of those cells, and skips
the measuring (the views fit their columns themselves, from widths measured once per row).
Relies on DataTable's private caches (textual < 9, pinned in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import RenderableType
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

Change = tuple[str, str, RenderableType]  # row key, column key, new cell


class Grid(DataTable[RenderableType]):
    """A DataTable with fixed-width columns and a bulk cell update."""

    def replace_cells(self, changes: Iterable[Change]) -> int:
        """Put new values in cells that exist; redraw only those of them in view.

        Returns how many cells changed.
        """
        changed: set[tuple[RowKey, ColumnKey]] = set()
        for row, column, value in changes:
            row_key, column_key = RowKey(row), ColumnKey(column)
            self._data[row_key][column_key] = value
            changed.add((row_key, column_key))
        if changed:
            self._forget(changed)
            self.refresh()
        return len(changed)

    def _forget(self, changed: set[tuple[RowKey, ColumnKey]]) -> None:
        """Drop the cached renders of `changed` cells and of the lines made from them."""
        cells = self._cell_render_cache
        for key in [key for key in list(cells.keys()) if (key[0], key[1]) in changed]:
            cells.discard(key)
        self._row_renderable_cache.clear()
        self._row_render_cache.clear()
        self._line_cache.clear()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """The virtual size only: every column was added with its width, rows are one line."""
        super()._update_dimensions(())
