"""The `?` screen: every key, and what each view shows."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("1-7", "switch view: Overview, Runners, Interfaces, VNIs, MTU, Firewall, Events"),
    ("tab / shift+tab", "next / previous view"),
    ("↑ ↓ PgUp PgDn", "move in a table; the pane below shows the highlighted row"),
    ("/", "filter the table (Enter keeps the filter, Esc clears it)"),
    ("s", "sort by the next column (or click a column header; again to reverse)"),
    ("r", "refresh now"),
    ("^p", "command palette (ctrl+p): the keys of this view, theme, screenshot, quit"),
    ("?", "this help"),
    ("q", "quit"),
)


def help_text(refresh_interval: float) -> Group:
    keys = Table.grid(padding=(0, 2))
    keys.add_column(style="bold cyan", justify="right", no_wrap=True)
    keys.add_column()
    for key, what in KEYS:
        keys.add_row(key, what)
    note = Text(
        f"\nData refreshes every {refresh_interval:g}s (tui_refresh_interval). The glyphs "
        "✔ ok, ▲ warn, ✖ fail, ○ idle and ? not reported yet keep health readable without "
        "colour (NO_COLOR). A narrow terminal drops the least useful columns and cuts long "
        "names with …: the pane below a table shows the highlighted row whole.",
        style="dim",
    )
    return Group(Text("krnet tui\n", style="bold"), keys, note)


class HelpScreen(ModalScreen[None]):
    """Keys and glyphs; any of Esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", show=False),
    ]

    def __init__(self, refresh_interval: float) -> None:
        super().__init__()
        self.refresh_interval = refresh_interval

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(self.refresh_interval))
