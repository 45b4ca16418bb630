"""Screenshots of the main views at 80x24 and 120x40, compared with the accepted SVGs.

Deterministic by construction: the recorded snapshot fixes every time shown, the refresh
timer never fires during a test, the header has no clock and no input has focus. After a
deliberate change of the UI: `pytest tests/tui/test_snapshots.py --snapshot-update`, then
look at the SVGs before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest

from krnet.tui.app import VIEWS
from tests.tui.support import make_app, ready

KEYS = {view_id: key for view_id, _label, key, _cls in VIEWS}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
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
