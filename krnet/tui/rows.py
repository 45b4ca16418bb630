"""Table rows as data: what a view's `rows` returns, filtered, sorted and fitted to a width.

No textual here. A row keeps its text cells as plain (escaped) strings; a cell is measured only
when it is new or changed (`widest`), and the table makes a `Text` of a cell only when that cell
goes into its grid, so a refresh of thousands of rows costs comparisons, not renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rich.cells import cell_len
from rich.console import RenderableType
from rich.text import Text

from krnet.core.model.text import printable

Layout = tuple[tuple[str, int], ...]  # the columns shown, in order, each with its width


@dataclass(frozen=True)
class Row:
    """One table row: a stable key, the cells shown, and the values each column sorts by."""

    key: str
    cells: tuple[RenderableType, ...]
    sort: tuple[Any, ...]

    def __post_init__(self) -> None:
        # DataTable reads a str cell as markup: a hostname `[/]` would crash the view and
        # `[reverse]x` be drawn styled. Cells are network strings: text, escaped (and made a
        # Text, never markup, by `fitted`).
        cells = tuple(printable(c) if isinstance(c, str) else c for c in self.cells)
        object.__setattr__(self, "cells", cells)

    @cached_property
    def plain(self) -> tuple[str, ...]:
        return tuple(_plain(cell) for cell in self.cells)

    def matches(self, needle: str) -> bool:
        return any(needle in cell.lower() for cell in self.plain)


def _plain(cell: RenderableType) -> str:
    if isinstance(cell, str):
        return cell
    return cell.plain if isinstance(cell, Text) else str(cell)


def fitted(cell: RenderableType) -> RenderableType:
    """A cell as the table shows it: one line, cut with `…` when its column is narrower."""
    if isinstance(cell, str):
        return Text(cell, no_wrap=True, overflow="ellipsis", end="")
    if isinstance(cell, Text):
        copy = cell.copy()
        copy.no_wrap, copy.overflow, copy.end = True, "ellipsis", ""
        return copy
    return cell


def filtered_sorted(
    rows: Sequence[Row], needle: str, column: int | None, reverse: bool
) -> list[Row]:
    """The rows matching `needle` (case-insensitive), ordered by `column` when one is set."""
    needle = needle.strip().lower()
    shown = [row for row in rows if row.matches(needle)] if needle else list(rows)
    if column is not None:
        shown.sort(key=lambda row: _sort_key(row.sort[column]), reverse=reverse)
    return shown


def widest(
    columns: Sequence[str], rows: Iterable[Row], before: Mapping[str, Row], seen: Mapping[str, int]
) -> dict[str, int]:
    """The widths `seen` grown to fit each header and each cell of `rows` that is new or not
    the same as in the row of that key `before` (unchanged cells are not measured again)."""
    widths = [max(cell_len(label), seen.get(label, 0)) for label in columns]
    for row in rows:
        old = before.get(row.key)
        if old is not None and old.cells is row.cells:
            continue
        for i, cell in enumerate(row.cells):
            if old is None or cell != old.cells[i]:
                widths[i] = max(widths[i], cell_len(_plain(cell)))
    return dict(zip(columns, widths, strict=True))


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
            widest_column = max(narrowable, key=widths.__getitem__)
            widths[widest_column] -= 1
            over -= 1
        if over <= 0:
            break
    return tuple(widths.items())


def _sort_key(value: Any) -> tuple[int, Any]:
    """None last; numbers before text so a column of either sorts without a TypeError."""
    if value is None:
        return (2, 0)
    return (0, value) if isinstance(value, int | float) else (1, str(value))
