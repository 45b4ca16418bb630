"""Direct mode's pure parts: the peer table, the VTEP's derived values and each pair's path.

In direct mode every runner has one VTEP (`vxkrd`) for runner-to-runner traffic besides its
hub tunnel. Everything about a peer's entries follows from its runner id and the plan: its
VTEP MAC, its VTEP address (the network address of its subnet, which no container gets) and
the shared VNI. `PathBook` decides, from probe results alone, whether a pair uses its direct
route or falls back to the hub (docs/design.md "Direct mode").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from krnet.core.model.plan import OverlayPlan

VTEP_NAME = "vxkrd"
VTEP_MAC_PREFIX = (0x02, 0x4B, 0x52, 0x00)  # locally administered unicast, "KR", then the id
SWITCH_AFTER = 3  # probes in a row that move a pair to the other path
# every runner holds a route, neighbour and FDB entry per peer and every push carries the whole
# table: direct mode stops at the reference's 255 runners (a /16 each); hub mode goes further
MAX_DIRECT_RUNNERS = 255

PathKind = Literal["direct", "hub"]


@dataclass(frozen=True)
class Peer:
    """Another runner this runner reaches directly: its id and underlay address."""

    runner_id: int
    physical_ip: str


@dataclass(frozen=True)
class PeerPath:
    """Where one pair's traffic goes now, as the runner reports it (`direct_peers`)."""

    runner_id: int
    physical_ip: str
    path: PathKind
    since: datetime
    last_probe: datetime | None = None
    last_probe_ok: bool | None = None
    failures: int = 0  # failed probes in a row
    successes: int = 0  # good probes in a row


def vtep_mac(runner_id: int) -> str:
    """Runner N's VTEP MAC, 02:4b:52:00:HH:LL: the same every build, so peers' entries stay."""
    if not 0 <= runner_id <= 0xFFFF:
        raise ValueError(f"runner id {runner_id} does not fit a VTEP MAC (0..65535)")
    octets = (*VTEP_MAC_PREFIX, runner_id >> 8, runner_id & 0xFF)
    return ":".join(f"{octet:02x}" for octet in octets)


def vtep_address(plan: OverlayPlan, runner_id: int) -> IPv4Address:
    """Runner N's VTEP address: the network address of its subnet (10.N.0.0 by default)."""
    return runner_subnet(plan, runner_id).network_address


@lru_cache(maxsize=1024)
def runner_subnet(plan: OverlayPlan, runner_id: int) -> IPv4Network:
    """Runner N's subnet, worked out once per plan: every pushed table lists up to 255 peers."""
    return plan.runner(runner_id).subnet


def vtep_vni(plan: OverlayPlan) -> int:
    """The VNI all VTEPs share: overlay_vxlan_id + 0 (no runner id is 0)."""
    return plan.vni(0)


class PathBook:
    """Each pair's path, switched after `SWITCH_AFTER` probes in a row say so."""

    def __init__(self, switch_after: int = SWITCH_AFTER) -> None:
        self.switch_after = switch_after
        self._paths: dict[int, PeerPath] = {}

    def track(self, peers: Iterable[Peer], now: datetime) -> None:
        """Follow exactly these peers: new ones start direct, gone ones are forgotten."""
        listed = {peer.runner_id: peer for peer in peers}
        for runner_id in set(self._paths) - set(listed):
            del self._paths[runner_id]
        for runner_id, peer in listed.items():
            known = self._paths.get(runner_id)
            if known is None:
                self._paths[runner_id] = PeerPath(runner_id, peer.physical_ip, "direct", now)
            elif known.physical_ip != peer.physical_ip:
                self._paths[runner_id] = replace(known, physical_ip=peer.physical_ip)

    def record(self, runner_id: int, ok: bool, at: datetime) -> str | None:
        """One probe's outcome; the event text when it switched the pair, else None."""
        known = self._paths.get(runner_id)
        if known is None:
            return None
        failures = 0 if ok else known.failures + 1
        successes = known.successes + 1 if ok else 0
        updated = replace(
            known, last_probe=at, last_probe_ok=ok, failures=failures, successes=successes
        )
        event = None
        if known.path == "direct" and failures >= self.switch_after:
            updated = replace(updated, path="hub", since=at)
            event = f"runner {runner_id}: direct path lost after {failures} probes, via the hub"
        elif known.path == "hub" and successes >= self.switch_after:
            updated = replace(updated, path="direct", since=at)
            event = f"runner {runner_id}: direct path back after {successes} probes"
        self._paths[runner_id] = updated
        return event

    def path(self, runner_id: int) -> PathKind:
        """The pair's path; a peer not tracked (yet) counts as direct."""
        known = self._paths.get(runner_id)
        return "direct" if known is None else known.path

    def paths(self) -> tuple[PeerPath, ...]:
        """Every tracked pair, by runner id."""
        return tuple(self._paths[runner_id] for runner_id in sorted(self._paths))
