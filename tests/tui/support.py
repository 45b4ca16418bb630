"""TUI test helpers: apps fed from recorded snapshots, and a way to wait for their first refresh."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Static

from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import load_file
from krnet.tui.app import KrnetApp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
NEVER = 3600.0  # refresh interval for tests that refresh by hand


def snapshot(name: str) -> NodeSnapshot:
    return load_file(FIXTURES / f"{name}.json")


class Replay:
    """A SnapshotSource that plays recorded snapshots in order, then repeats the last."""

    def __init__(self, snapshots: Sequence[NodeSnapshot]) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0

    def __call__(self) -> NodeSnapshot:
        self.calls += 1
        return self.snapshots[min(self.calls, len(self.snapshots)) - 1]


def later(base: NodeSnapshot, seconds: float, grow: int) -> NodeSnapshot:
    """The same node `seconds` on, every link having moved `grow` more bytes each way."""
    links = {
        name: dataclasses.replace(
            link, rx_bytes=link.rx_bytes + grow, tx_bytes=link.tx_bytes + grow // 2
        )
        for name, link in base.links.items()
    }
    return dataclasses.replace(
        base, taken_at=base.taken_at + timedelta(seconds=seconds), links=links
    )


def make_app(*names_or_snapshots: str | NodeSnapshot, interval: float = NEVER) -> KrnetApp:
    snapshots = [snapshot(s) if isinstance(s, str) else s for s in names_or_snapshots]
    return KrnetApp(Replay(snapshots), interval, "local host")


async def ready(pilot: Pilot[None]) -> None:
    """Wait until every gather has finished and its data is on screen."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text_of(pilot: Pilot[None], selector: str) -> str:
    content = pilot.app.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)
