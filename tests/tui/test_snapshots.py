"""Screenshots of every view at 80x24 and 120x40, compared with the accepted SVGs.

Two sets: five runners in trouble (mixed_host), and a full pool of 255 runners with 45-character
hostnames (host_255_long), its Interfaces view after nine refreshes so every rate graph is full.

Deterministic by construction: the recorded snapshot fixes every time shown, the refresh
timer never fires during a test, the header has no clock and no input has focus. After a
deliberate change of the UI: `pytest tests/tui/test_snapshots.py --snapshot-update`, then
look at the SVGs before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from krnet.tui.app import VIEWS, KrnetApp
from tests.tui.support import Replay, later, make_app, ready, snapshot

KEYS = {view_id: key for view_id, _label, key, _cls in VIEWS}
SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])


@SIZES
@pytest.mark.parametrize("view_id", list(KEYS))
def test_view(snap_compare: Any, view_id: str, size: tuple[int, int]) -> None:
    app = make_app("mixed_host")
    assert snap_compare(app, press=[KEYS[view_id]], terminal_size=size, run_before=ready)


def test_runner_node_overview(snap_compare: Any) -> None:
    app = make_app("healthy_runner")
    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)


def test_help(snap_compare: Any) -> None:
    app = make_app("mixed_host")
    assert snap_compare(app, press=["question_mark"], terminal_size=(80, 24), run_before=ready)


@SIZES
@pytest.mark.parametrize("view_id", list(KEYS))
def test_full_pool_view(snap_compare: Any, view_id: str, size: tuple[int, int]) -> None:
    base = snapshot("host_255_long")
    readings = [later(base, 2 * i, 250_000 * i * i) for i in range(10)]
    app = KrnetApp(Replay(readings), 3600, "local host")

    async def fill(pilot: Pilot[None]) -> None:
        await ready(pilot)
        await pilot.press(KEYS[view_id])
        for _ in range(9 if view_id == "interfaces" else 0):
            await pilot.press("r")
            await ready(pilot)

    assert snap_compare(app, terminal_size=size, run_before=fill)
