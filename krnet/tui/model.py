"""What every view is drawn from: a snapshot, its diagnosis and link rates, made off the UI thread.

No textual here: `ViewModel.update` runs in the app's gather worker, and tests and bench/tui.py
build `ViewData` without an app.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.observe.diagnose.check import Check, Status
from krnet.core.observe.diagnose.engine import diagnose, runner_health, runner_mismatches

SnapshotSource = Callable[[], NodeSnapshot]
HISTORY = 30  # rate samples kept per link for the sparklines
SPARK_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class LinkRates:
    """Bytes per second now (None before the second snapshot) and the recent history."""

    rx: float | None = None
    tx: float | None = None
    rx_history: tuple[float, ...] = ()
    tx_history: tuple[float, ...] = ()


@dataclass(frozen=True)
class ViewData:
    """One refresh's worth of data for all views."""

    snapshot: NodeSnapshot
    checks: tuple[Check, ...]
    health: Mapping[int, Status] = field(default_factory=dict)
    mismatches: Mapping[int, list[str]] = field(default_factory=dict)
    rates: Mapping[str, LinkRates] = field(default_factory=dict)

    @staticmethod
    def of(snapshot: NodeSnapshot, rates: Mapping[str, LinkRates] | None = None) -> ViewData:
        checks = tuple(diagnose(snapshot))
        return ViewData(
            snapshot=snapshot,
            checks=checks,
            health=runner_health(checks),
            mismatches=runner_mismatches(snapshot, checks),
            rates=rates or {},
        )


class RateTracker:
    """Turns successive counter readings into rates and keeps a short history per link."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self._previous: NodeSnapshot | None = None
        self._rx: dict[str, deque[float]] = {}
        self._tx: dict[str, deque[float]] = {}

    def update(self, snapshot: NodeSnapshot) -> dict[str, LinkRates]:
        previous, self._previous = self._previous, snapshot
        elapsed = (snapshot.taken_at - previous.taken_at).total_seconds() if previous else 0.0
        rates: dict[str, LinkRates] = {}
        for name, link in snapshot.links.items():
            before = previous.links.get(name) if previous else None
            if before is None or elapsed <= 0 or before.index != link.index:
                rates[name] = LinkRates()
                self._rx.pop(name, None)
                self._tx.pop(name, None)
                continue
            rx = max(0, link.rx_bytes - before.rx_bytes) / elapsed
            tx = max(0, link.tx_bytes - before.tx_bytes) / elapsed
            rx_history = self._rx.setdefault(name, deque(maxlen=self.history))
            tx_history = self._tx.setdefault(name, deque(maxlen=self.history))
            rx_history.append(rx)
            tx_history.append(tx)
            rates[name] = LinkRates(rx, tx, tuple(rx_history), tuple(tx_history))
        for gone in set(self._rx) - set(snapshot.links):
            self._rx.pop(gone, None)
            self._tx.pop(gone, None)
        return rates


class ViewModel:
    """The worker's side of a refresh: snapshot in, ViewData out."""

    def __init__(self) -> None:
        self.rates = RateTracker()

    def update(self, snapshot: NodeSnapshot) -> ViewData:
        return ViewData.of(snapshot, self.rates.update(snapshot))


def spark(values: tuple[float, ...], width: int = 10) -> str:
    """A text sparkline of the last `width` values, scaled to their maximum."""
    shown = values[-width:]
    top = max(shown, default=0.0)
    if top <= 0:
        return SPARK_BARS[0] * len(shown)
    last = len(SPARK_BARS) - 1
    return "".join(SPARK_BARS[round(value / top * last)] for value in shown)


def human_rate(value: float | None) -> str:
    """Bytes per second as bits per second, the way link speeds are read: `1.2M`."""
    if value is None:
        return "-"
    bits = value * 8
    for unit in ("", "k", "M", "G"):
        if bits < 1000:
            return f"{bits:.0f}{unit}" if unit == "" else f"{bits:.1f}{unit}"
        bits /= 1000
    return f"{bits:.1f}T"
