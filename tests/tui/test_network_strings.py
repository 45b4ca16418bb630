"""Hostnames and messages from the network are drawn as text in every view, never as markup.

A runner joining as `[/]` once crashed the operator's TUI with a MarkupError, and `[reverse]x`
was drawn reversed. The snapshot here carries such strings the way a remote host would send
them; every view is shown in turn.
"""

from __future__ import annotations

import dataclasses

from rich.text import Text

from krnet.tui.app import VIEW_IDS, GatherFailed
from krnet.tui.table import TableView
from tests.tui.support import make_app, ready, snapshot

SIZE = (120, 40)
NAMES = ["[/]", "[reverse]x", "[bold red]boom[/]", "esc\x1b[2Jape", "[link=http://x]y"]


def hostile_snapshot():  # type: ignore[no-untyped-def]
    base = snapshot("mixed_host")
    runners = tuple(
        dataclasses.replace(runner, hostname=NAMES[index % len(NAMES)])
        for index, runner in enumerate(base.runners)
    )
    events = tuple(
        dataclasses.replace(event, message=f"[/] {NAMES[index % len(NAMES)]}")
        for index, event in enumerate(base.events)
    )
    return dataclasses.replace(base, runners=runners, events=events)


async def test_every_view_draws_network_strings_as_text() -> None:
    app = make_app(hostile_snapshot())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for view_id in VIEW_IDS:  # a MarkupError in any of them would end the app here
            app.show_view(view_id)
            await pilot.pause()
        runners = app.query_one("#runners-view", TableView).table
        cells = list(runners.get_column("RUNNER"))
        assert all(isinstance(cell, Text) for cell in cells)
        shown = {cell.plain: cell for cell in cells}
        assert {"[/]", "[reverse]x", "[bold red]boom[/]", "esc\\x1b[2Jape"} <= set(shown)
        assert shown["[reverse]x"].spans == [] and not shown["[reverse]x"].style
        assert app.is_running


async def test_a_failure_message_is_escaped_in_the_title() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.post_message(GatherFailed("host refused: [/]\x1b]0;owned\x07"))
        await pilot.pause()
        assert app.sub_title.endswith("host refused: [/]\\x1b]0;owned\\x07")
        assert app.is_running
