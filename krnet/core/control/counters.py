"""Counts of what happened in this process, for `/metrics`: joins, refusals, heartbeats, repairs.

Plain integers behind a lock, bumped where the event happens (session, listener, plane events)
and read at scrape time by `krnet.core.control.metrics`; one set per process, like Prometheus's
own default registry. Nothing here imports prometheus_client, so the join path stays as light
as before. Label values are bounded: error codes, change kinds, never free text.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

# what a reconcile change was, from the one-line change the data plane reports
CHANGE_KINDS = (
    "link",
    "address",
    "route",
    "firewall",
    "firewalld",
    "docker_network",
    "sysctl",
    "adopted",
)


def change_kind(change: str) -> str:
    """The kind of one data-plane change line ("vxkr1: created (...)" is "link")."""
    head = change.split(":", 1)[0]
    if change.startswith("sysctl "):
        return "sysctl"
    if change.startswith("firewalld:"):
        return "firewalld"
    if "Docker network" in change:
        return "docker_network"
    if ": address " in change:
        return "address"
    if head.split(" ", 1)[0] in ("filter", "nat", "mangle", "raw"):
        return "firewall"
    if "/" in head or head.startswith("default"):
        return "route"
    return "link"


@dataclass
class Counters:
    """Monotonic counts since this process started (thread-safe)."""

    joins: int = 0
    heartbeats: int = 0
    reconcile_passes: int = 0
    dataplane_errors: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def joined(self) -> None:
        with self._lock:
            self.joins += 1

    def refused(self, code: str) -> None:
        with self._lock:
            self.refusals[code] += 1

    def heartbeat(self) -> None:
        with self._lock:
            self.heartbeats += 1

    def reconciled(self) -> None:
        with self._lock:
            self.reconcile_passes += 1

    def dataplane_failed(self) -> None:
        with self._lock:
            self.dataplane_errors += 1

    def changed(self, change: str) -> None:
        with self._lock:
            self.changes[change_kind(change)] += 1

    def adopted(self) -> None:
        with self._lock:
            self.changes["adopted"] += 1

    def copy(self) -> Counters:
        """A consistent copy to read from (a scrape runs beside the join service)."""
        with self._lock:
            return Counters(
                self.joins,
                self.heartbeats,
                self.reconcile_passes,
                self.dataplane_errors,
                Counter(self.refusals),
                Counter(self.changes),
            )


COUNTERS = Counters()
