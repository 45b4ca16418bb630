"""Values of the SQLite record that cross module boundaries (no database code here).

`RunnerRecord.observed` holds the last heartbeat's view of the runner's links, as the runner
data plane reports it; `krnet.core.observe.status` compares these keys, when present, with the plan:
"tunnel_present", "tunnel_up" (bools), "vni", "port", "mtu", "bridge_mtu" (ints), "local" (the
tunnel's local address) and "error" (the runner could not read its links).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

ACTIVE = "active"
INACTIVE = "inactive"
RUNNER_STATUSES = (ACTIVE, INACTIVE)
UNREPORTED = 0  # vxlan_port / mtu of an adopted record: the runner never reported them


@dataclass(frozen=True)
class RunnerRecord:
    """One runner id and who holds it; times are timezone-aware UTC."""

    runner_id: int
    identity: str | None
    hostname: str
    physical_ip: str
    vni: int
    subnet: str
    status: str
    first_seen: datetime
    last_seen: datetime
    vxlan_id: int
    vxlan_port: int
    mtu: int
    observed: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class JoinRequest:
    """What a joining runner says about itself: who it is and the settings it runs with."""

    identity: str | None
    hostname: str
    physical_ip: str
    vxlan_id: int
    vxlan_port: int
    mtu: int


@dataclass(frozen=True)
class AllocationDecision:
    """The id a join gets and why: "new", "returning" or "reclaimed" (from `previous`)."""

    runner_id: int
    kind: str
    previous: RunnerRecord | None


@dataclass(frozen=True)
class EventRecord:
    """One line of the record's event log."""

    id: int
    time: datetime
    kind: str
    runner_id: int | None
    message: str
