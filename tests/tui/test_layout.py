"""The TUI at 80x24 and 120x40: every column that matters, no horizontal scrolling, no cut verdict.

fit_columns is pure and tested alone; the pilot tests read what the screen really shows with 255
runners whose hostnames are 45 characters long (the host_255_long fixture).
"""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable

from krnet.tui.app import KrnetApp
from krnet.tui.help import HelpScreen, help_text
from krnet.tui.table import TableView, fit_columns
from tests.tui.support import Replay, later, make_app, ready, snapshot, text_of

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
KEYS = {"runners": "2", "interfaces": "3", "vnis": "4", "mtu": "5", "firewall": "6", "events": "7"}
# what each view shows of a full pool at each size; the detail pane has the rest
COLUMNS = {
    ("runners", "80x24"): ["ID", "RUNNER", "HEALTH", "PHYSICAL IP", "LAST SEEN", "PROBE"],
    ("interfaces", "80x24"): ["NAME", "MTU", "STATE", "ADDRESSES", "RX bit/s", "TX bit/s"],
    ("vnis", "80x24"): ["ID", "RUNNER", "RECORD", "THIS END", "FAR END", "STATE"],
    ("mtu", "80x24"): ["WHERE", "WHAT", "MTU", "EXPECTED", "STATE"],
    ("firewall", "80x24"): ["STATE", "CHAIN", "RULE", "VERDICT", "PACKETS"],
    ("events", "80x24"): ["TIME", "KIND", "RUNNER", "MESSAGE"],
    ("runners", "120x40"): [
        *("ID", "RUNNER", "HEALTH", "PHYSICAL IP", "VNI", "SUBNET", "STATUS", "LAST SEEN"),
        "PROBE",
    ],
    ("interfaces", "120x40"): [
        *("NAME", "KIND", "VNI", "REMOTE", "PORT", "MTU", "STATE", "MASTER", "ADDRESSES"),
        *("RX bit/s", "TX bit/s"),
    ],
    ("vnis", "120x40"): [
        *("ID", "RUNNER", "EXPECTED", "RECORD", "THIS END", "FAR END", "PORT", "STATE"),
    ],
    ("mtu", "120x40"): ["WHERE", "WHAT", "MTU", "EXPECTED", "STATE"],
    ("firewall", "120x40"): ["STATE", "TABLE", "CHAIN", "RULE", "VERDICT", "PACKETS", "BYTES"],
    ("events", "120x40"): ["TIME", "KIND", "RUNNER", "MESSAGE"],
}
VERDICT = re.compile(r"\s(ACCEPT|DROP|MASQUERADE|KRNET-[A-Z]+)\s+[\d,]+\s")


def test_fit_columns_squeezes_then_drops_least_useful_first() -> None:
    natural = {"ID": 3, "NAME": 40, "IP": 15, "VNI": 3, "PROBE": 10}
    assert fit_columns(natural, 200, {"NAME": 16}, ("VNI",)) == tuple(natural.items())
    # 81 needed at padding 2: NAME gives 8 and everything stays
    assert dict(fit_columns(natural, 73, {"NAME": 16}, ("VNI",))) == {**natural, "NAME": 32}
    # NAME at its minimum is not enough: VNI goes and NAME takes back what is left
    assert dict(fit_columns(natural, 50, {"NAME": 16}, ("VNI",))) == {
        "ID": 3,
        "NAME": 14 + 2,
        "IP": 15,
        "PROBE": 10,
    }


def test_fit_columns_never_cuts_a_column_it_was_not_allowed_to() -> None:
    natural = {"RULE": 55, "VERDICT": 13, "PACKETS": 7}
    widths = dict(fit_columns(natural, 50, {"RULE": 20}, ()))
    assert widths["VERDICT"] == 13 and widths["PACKETS"] == 7 and widths["RULE"] == 24


def full_pool_app(view_id: str) -> KrnetApp:
    """The full pool; for Interfaces, nine refreshes so that every rate graph is full."""
    if view_id != "interfaces":
        return make_app("host_255_long")
    base = snapshot("host_255_long")
    readings = [later(base, 2 * i, 250_000 * i * i) for i in range(10)]
    return KrnetApp(Replay(readings), 3600, "local host")


async def show(pilot: Pilot[None], view_id: str) -> TableView:
    await ready(pilot)
    await pilot.press(KEYS[view_id])
    if view_id == "interfaces":
        for _ in range(9):
            await pilot.press("r")
            await ready(pilot)
    await pilot.pause()
    return pilot.app.query_one(f"#{view_id}-view", TableView)


def shown_columns(table: DataTable) -> list[str]:
    return [str(column.key.value) for column in table.ordered_columns]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("view_id", list(KEYS))
async def test_every_column_that_matters_fits_without_scrolling(view_id: str, size: str) -> None:
    app = full_pool_app(view_id)
    async with app.run_test(size=SIZES[size]) as pilot:
        view = await show(pilot, view_id)
        table = view.table
        assert shown_columns(table) == COLUMNS[view_id, size]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert table.max_scroll_x == 0


def screen_lines(app: KrnetApp) -> list[str]:
    return [
        "".join(segment.text for segment in strip)
        for strip in app.screen._compositor.render_strips()
    ]


@pytest.mark.parametrize("size", list(SIZES))
async def test_no_rule_verdict_is_cut(size: str) -> None:
    app = make_app("host_255_long")
    async with app.run_test(size=SIZES[size]) as pilot:
        view = await show(pilot, "firewall")
        for place in ("ctrl+home", "ctrl+end"):  # the chains' jumps first, the guard's DROP last
            await pilot.press(place)
            await pilot.pause()
            rows = [line for line in screen_lines(app) if line.lstrip()[:1] in "✔✖▲"]
            rows = [line for line in rows if "present" in line or "MISSING" in line]
            assert len(rows) >= min(5, view.table.row_count)
            for line in rows:
                assert VERDICT.search(line), line
        assert "DROP" in "".join(rows)  # the last rule, the guard's drop, seen whole
        detail = text_of(pilot, "#firewall-view .detail")
        assert detail.startswith("-t filter -A KRNET-OUTPUT -p udp -m udp --dport 4789 -j ACCEPT")


async def test_a_runner_not_reported_yet_is_not_ok() -> None:
    app = make_app("host_255_long")
    async with app.run_test(size=(80, 24)) as pilot:
        view = await show(pilot, "vnis")
        states = [str(cell) for cell in view.table.get_column("STATE")]
        assert states[254] == "? not reported yet"  # runner 255, just joined
        assert states[:254] == ["✔ ok"] * 254
        await pilot.press("ctrl+end")
        assert "runner 255 · gpu-worker-255.rack-7.dc-west.example.internal" in text_of(
            pilot, "#vnis-view .detail"
        )
        await pilot.press("1")
        assert text_of(pilot, "#overview-spokes").splitlines()[-1].endswith("not probed yet")


async def test_help_lists_the_palette_and_the_marks() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        lines = screen_lines(app)
        assert any("^p" in line and "command palette" in line for line in lines)  # in the box
    console = Console(width=400, record=True)
    console.print(help_text(2.0))
    assert "? not reported yet" in console.export_text()  # below, when the help scrolls
