"""Values of the SQLite record that cross module boundaries (no database code here).

`RunnerRecord.observed` is the last heartbeat's `observed` object as the record stores it (the
wire form of `krnet.core.model.report.RunnerReport`, with the host's `applied` beside it);
readers take it typed, as `RunnerRecord.report`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

from krnet.core.model.report import RunnerReport

RunnerStatus = Literal["active", "inactive"]
ACTIVE: RunnerStatus = "active"
INACTIVE: RunnerStatus = "inactive"
RUNNER_STATUSES: tuple[RunnerStatus, ...] = (ACTIVE, INACTIVE)
AllocationKind = Literal["new", "returning", "reclaimed", "reenrolled"]
UNREPORTED = 0  # vxlan_port / mtu of an adopted record: the runner never reported them


@dataclass(frozen=True)
class RunnerRecord:
    """One runner id and who holds it; times are timezone-aware UTC.

    `identity_hash` (see `identity_hash`) is set for an enrolled runner, one that holds a
    per-runner key; the key itself and the identity stay in the record (docs/security.md).
    """

    runner_id: int
    identity_hash: str | None
    hostname: str
    physical_ip: str
    vni: int
    subnet: str
    status: RunnerStatus
    first_seen: datetime
    last_seen: datetime
    vxlan_id: int
    vxlan_port: int
    mtu: int
    observed: dict[str, object] = field(default_factory=dict)

    @cached_property
    def report(self) -> RunnerReport:
        """What the runner last said about its own end."""
        return RunnerReport.from_wire(self.observed)

    def status_at(self, now: datetime, runner_timeout: float) -> RunnerStatus:
        """Its status as every view tells it: a record still marked active but silent for
        `runner_timeout` is inactive, whether or not a host has judged it yet (an adopted
        tunnel's record never was active)."""
        heard = now - self.last_seen < timedelta(seconds=runner_timeout)
        return ACTIVE if self.status == ACTIVE and heard else INACTIVE


@dataclass(frozen=True)
class JoinRequest:
    """What a joining runner says about itself: who it is and the settings it runs with.

    `identity` is what the runner sends; the record keeps only its `identity_hash`.
    """

    identity: str | None
    hostname: str
    physical_ip: str
    vxlan_id: int
    vxlan_port: int
    mtu: int


@dataclass(frozen=True)
class AllocationDecision:
    """The id a join gets and why: "new", "returning", "reclaimed" or "reenrolled" (from
    `previous`)."""

    runner_id: int
    kind: AllocationKind
    previous: RunnerRecord | None


@dataclass(frozen=True)
class EventRecord:
    """One line of the record's event log."""

    id: int
    time: datetime
    kind: str
    runner_id: int | None
    message: str


def identity_hash(identity: str | None) -> str | None:
    """What the record keeps of a runner's identity: its SHA-256, hex (None stays None)."""
    if identity is None:
        return None
    return hashlib.sha256(identity.encode("ascii")).hexdigest()
