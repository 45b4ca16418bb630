"""The Events view: joins, reclaims, reconciles, refusals and errors, newest first."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text

from krnet.tui.model import ViewData
from krnet.tui.rows import Row
from krnet.tui.table import TableView

COLUMNS = ("TIME", "KIND", "RUNNER", "MESSAGE")
SQUEEZE = {"MESSAGE": 20}  # whole in the detail pane
KIND_STYLE = {"error": "bold red", "refused": "yellow", "reclaim": "magenta", "join": "green"}


def event_rows(data: ViewData) -> list[Row]:
    """One row per event, newest first."""
    events = sorted(data.snapshot.events, key=lambda event: (event.time, event.id), reverse=True)
    return [
        Row(
            str(event.id),
            (
                event.time.strftime("%m-%d %H:%M:%S"),
                Text(event.kind, style=KIND_STYLE.get(event.kind, "")),
                "-" if event.runner_id is None else str(event.runner_id),
                event.message,
            ),
            (event.time, event.kind, event.runner_id, event.message),
        )
        for event in events
    ]


def event_detail(data: ViewData, key: str | None) -> RenderableType:
    event = next((e for e in data.snapshot.events if str(e.id) == key), None)
    if event is None:
        return Text("no events recorded", style="dim")
    runner = "" if event.runner_id is None else f" · runner {event.runner_id}"
    return Text(f"{event.time.isoformat()} · {event.kind}{runner}\n{event.message}")


def event_summary(data: ViewData) -> Text:
    return Text(f"{len(data.snapshot.events)} recent events, newest first")


class EventsView(TableView):
    """The record's event log."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    rows = staticmethod(event_rows)
    summary = staticmethod(event_summary)
    detail = staticmethod(event_detail)
