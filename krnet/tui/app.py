"""The krnet terminal UI: seven views of one node, refreshed by a worker off the UI thread.

The app is given a `SnapshotSource` (this node, a remote host, or recorded snapshots in
tests). A thread worker calls it and builds the ViewData, and the rows of the view on screen
(pure functions of the data: the UI thread only compares them with what it shows); the result
arrives as a message and every view redraws from it. The next gather is armed only after one
finishes, so a slow source never stacks up refreshes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Footer, TabbedContent, TabPane

from krnet.core.model.text import printable
from krnet.errors import KrnetError
from krnet.tui.events import EventsView
from krnet.tui.firewall_view import FirewallView
from krnet.tui.header import FixedHeader
from krnet.tui.help import HelpScreen
from krnet.tui.interfaces import InterfacesView
from krnet.tui.model import SnapshotSource, ViewData, ViewModel
from krnet.tui.mtu import MtuView
from krnet.tui.overview import OverviewView
from krnet.tui.rows import Row
from krnet.tui.runners import RunnersView
from krnet.tui.table import TableView
from krnet.tui.vnis import VnisView

# (pane id, tab label, key, view class)
VIEWS: tuple[tuple[str, str, str, type[Widget]], ...] = (
    ("overview", "Overview", "1", OverviewView),
    ("runners", "Runners", "2", RunnersView),
    ("interfaces", "Interfaces", "3", InterfacesView),
    ("vnis", "VNIs", "4", VnisView),
    ("mtu", "MTU", "5", MtuView),
    ("firewall", "Firewall", "6", FirewallView),
    ("events", "Events", "7", EventsView),
)
VIEW_IDS = tuple(view_id for view_id, _label, _key, _cls in VIEWS)
# the table views' row makers, by pane id: the gather worker makes the visible view's rows
ROW_MAKERS: dict[str, Callable[[ViewData], list[Row]]] = {
    view_id: cls.rows for view_id, _label, _key, cls in VIEWS if issubclass(cls, TableView)
}


def rows_for(view_id: str, data: ViewData) -> dict[str, list[Row]]:
    """The rows of view `view_id` made from `data` (none for a view that is not a table)."""
    make = ROW_MAKERS.get(view_id)
    return {view_id: make(data)} if make is not None else {}


@dataclass
class SnapshotReady(Message):
    """A gather finished: the data every view redraws from, and the rows made from it."""

    data: ViewData
    rows: Mapping[str, list[Row]] = field(default_factory=dict)


@dataclass
class GatherFailed(Message):
    """A gather failed with an error a person can act on."""

    error: str


class KrnetApp(App[None]):
    """Live overlay status of one node."""

    CSS_PATH = "krnet.tcss"
    TITLE = "krnet"
    # textual declares this `ClassVar[list[...]] | None`, which mypy reads as an instance variable
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (110, "-wide")]  # type: ignore[misc]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("tab", "next_view", "Next view", priority=True),
        Binding("shift+tab", "next_view(-1)", "Previous view", show=False, priority=True),
        *(
            Binding(key, f"view('{view_id}')", label, show=False)
            for view_id, label, key, _ in VIEWS
        ),
    ]

    def __init__(self, source: SnapshotSource, refresh_interval: float, where: str) -> None:
        super().__init__()
        self.source = source
        self.refresh_interval = refresh_interval
        self.where = where
        self.model = ViewModel()
        self.data: ViewData | None = None
        self.refreshes = 0
        self._timer: Timer | None = None
        self._gathering = False
        self._shown: dict[str, ViewData] = {}  # the data each view last drew
        self.on_screen = "overview"  # the view on screen, read by the gather worker

    def compose(self) -> ComposeResult:
        yield FixedHeader()
        with TabbedContent(initial="overview"):
            for view_id, label, key, cls in VIEWS:
                with TabPane(f"{key} {label}", id=view_id):
                    yield cls(id=f"{view_id}-view")
        yield Footer()

    def on_mount(self) -> None:
        self.say(f"{self.where} · waiting for the first reading")
        self.start_gather()

    # -- gathering ----------------------------------------------------------------------------

    def start_gather(self) -> None:
        """Gather now unless a gather is already running (it re-arms the timer itself)."""
        if self._gathering:
            return
        if self._timer is not None:
            self._timer.stop()
        self._gathering = True
        self.gather()

    @work(thread=True, group="gather")
    def gather(self) -> None:
        """Read the source and build the views' data and the visible view's rows, off the UI
        thread."""
        try:
            data = self.model.update(self.source())
        except KrnetError as exc:
            self.post_message(GatherFailed(str(exc)))
        else:
            self.post_message(SnapshotReady(data, rows_for(self.on_screen, data)))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self.apply(message.data, message.rows)
        self._rearm()

    def on_gather_failed(self, message: GatherFailed) -> None:
        self.say(f"{self.where} · ✖ {printable(message.error)}")
        self._rearm()

    def _rearm(self) -> None:
        self._gathering = False
        self._timer = self.set_timer(self.refresh_interval, self.start_gather)

    def apply(self, data: ViewData, rows: Mapping[str, list[Row]] | None = None) -> None:
        """Take new data (and rows made from it off the UI thread): the visible view redraws
        now, the others when they are shown."""
        self.data = data
        for view_id, made in (rows or {}).items():
            self.query_one(f"#{view_id}-view", TableView).take_rows(data, made)
        self.refreshes += 1
        self.show_view()
        taken = data.snapshot.taken_at.strftime("%H:%M:%SZ")
        self.say(f"{self.where} · {taken} · every {self.refresh_interval:g}s")

    def say(self, sub_title: str) -> None:
        """Show `sub_title` in the header, repainting only the header's title (setting it the
        usual way repaints the whole screen)."""
        self.set_reactive(KrnetApp.sub_title, sub_title)
        try:
            self.query_one(FixedHeader).show_title()
        except NoMatches:
            return

    def show_view(self, view_id: str | None = None) -> None:
        """Redraw one view (the visible one by default) from the latest data, unless it already
        shows it.

        Data can land before the views are mounted (a fast first gather) or while the app is
        being torn down; then there is nothing to draw on, and the data waits for the next
        refresh instead of raising in the message loop.
        """
        if self.data is None:
            return
        try:
            view_id = view_id or self.active_view
            if self._shown.get(view_id) is self.data:
                return
            self.query_one(f"#{view_id}-view").show(self.data)  # type: ignore[attr-defined]
        except NoMatches:
            return
        self._shown[view_id] = self.data

    # -- actions ------------------------------------------------------------------------------

    @property
    def active_view(self) -> str:
        return self.query_one(TabbedContent).active

    def action_view(self, view_id: str) -> None:
        self.query_one(TabbedContent).active = view_id

    def action_next_view(self, step: int = 1) -> None:
        index = VIEW_IDS.index(self.active_view)
        self.action_view(VIEW_IDS[(index + step) % len(VIEW_IDS)])

    def action_refresh_now(self) -> None:
        self.start_gather()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.refresh_interval))

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Bring the view up to date and put the keyboard on its table, so its keys work."""
        self.on_screen = event.pane.id or self.on_screen
        self.show_view(event.pane.id)
        tables = event.pane.query(DataTable)
        if tables:
            tables.first().focus()
        else:
            self.set_focus(None)
