"""The TUI with 4,095 runners (overlay_runner_prefix 20): it scrolls to the last runner and shows
it, a refresh draws only the rows in view, and of them only the cells that changed, without a
layout or a repaint of the whole screen, and the Overview's spoke picture stops at a full /16
pool (trouble first) with a count of the rest.

The data is given to the app by hand, undiagnosed: these tests are about the table, and the
diagnosis of 4,095 runners is the worker's (timed by bench/tui.py, not here).
"""

from __future__ import annotations

from functools import cache

from textual.pilot import Pilot

from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.observe.diagnose.check import FAIL
from krnet.tui.app import KrnetApp
from krnet.tui.model import ViewData
from krnet.tui.overview import SPOKES_SHOWN, spokes_text
from krnet.tui.table import TableView
from tests.tui.fleet import fleet
from tests.tui.support import later, make_app, ready, text_of

RUNNERS = 4095


@cache
def big() -> NodeSnapshot:
    return fleet(RUNNERS)


async def runners_of(pilot: Pilot[None], data: ViewData) -> TableView:
    await ready(pilot)
    await pilot.press("2")
    app = pilot.app
    assert isinstance(app, KrnetApp)
    app.apply(data)
    await pilot.pause()
    return app.query_one("#runners-view", TableView)


def screen_lines(app: KrnetApp) -> list[str]:
    return ["".join(s.text for s in strip) for strip in app.screen._compositor.render_strips()]


async def test_4095_runners_scroll_to_the_last_and_show_it() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=(120, 40)) as pilot:
        view = await runners_of(pilot, ViewData(big(), ()))
        assert view.table.row_count == RUNNERS
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert view.table.cursor_row == RUNNERS - 1
        rows = [line.split() for line in screen_lines(app)]
        rows = [
            cells for cells in rows if cells[:1] != [] and cells[0].isdigit() and len(cells) > 2
        ]
        assert rows[-1][:2] == ["4095", "runner-4095"]  # the last row on screen
        assert text_of(pilot, "#runners-view .detail").startswith(
            "runner 4095 · runner-4095 · 100.64.15.255"
        )
        assert "subnet 10.255.240.0/20" in text_of(pilot, "#runners-view .detail")


async def test_a_refresh_redraws_only_the_changed_cells_of_the_rows_in_view() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=(120, 40)) as pilot:
        view = await runners_of(pilot, ViewData(big(), ()))
        await pilot.press("pagedown", "pagedown")  # somewhere in the middle
        await pilot.pause()
        table = view.table
        cache = table._cell_render_cache  # each cell's render, kept until the cell changes
        drawn = {key: cache.get(key) for key in list(cache.keys())}
        key = view.highlighted_key() or ""
        seen = table.get_cell(key, "LAST SEEN").plain
        app.apply(ViewData(later(big(), 2, 0), ()))  # two seconds on: every LAST SEEN changes
        await pilot.pause()
        redrawn = [key for key in list(cache.keys()) if cache.get(key) is not drawn.get(key)]
        in_view = range(int(table.scroll_y), int(table.scroll_y) + table.size.height)
        rows = {table.get_row_index(key[0]) for key in redrawn if key[0] in table.rows}
        assert {str(key[1].value) for key in redrawn} == {"LAST SEEN"}
        assert rows and rows <= set(in_view)
        assert table.get_cell(key, "LAST SEEN").plain == f"{int(seen.split('s')[0]) + 2}s ago"


def test_the_spoke_picture_of_4095_runners_puts_trouble_first_and_counts_the_rest() -> None:
    lines = spokes_text(ViewData(big(), (), health={4000: FAIL})).plain.splitlines()
    assert len(lines) == 1 + SPOKES_SHOWN + 1  # the hub, the spokes, the count
    assert lines[1].startswith("├─✖ vxkr4000")
    assert lines[2].startswith("├─✔ vxkr1 ")
    assert (
        lines[-1] == f"└─ … and {RUNNERS - SPOKES_SHOWN:,} more runners (2 Runners lists them all)"
    )


async def test_a_steady_refresh_neither_lays_out_nor_repaints_the_whole_screen() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=(120, 40)) as pilot:
        await runners_of(pilot, ViewData(fleet(20), ()))
        app.apply(ViewData(later(fleet(20), 2, 1000), ()))  # every LAST SEEN and the sub-title
        assert not app.screen._layout_required and not app.screen._repaint_required
        await pilot.pause()
