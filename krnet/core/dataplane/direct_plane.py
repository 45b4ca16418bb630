"""Direct mode on a runner: the VTEP `vxkrd`, an entry set per peer, and each pair's path.

The runner plane owns one and calls it under its lock: `ensure` builds the VTEP and exactly
the listed peers' neighbour, FDB entry and routes; `probe` sends one DF echo round through the
VTEP to every peer, feeds the `PathBook`, and on a switch withdraws or restores that pair's
subnet route (its neighbour, FDB entry and /32 route stay, so the probe keeps testing the
direct path). Everything is derived from runner ids and the plan (`krnet.core.model.peers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from krnet.core.dataplane.interfaces import PeerEntry
from krnet.core.dataplane.probe import ProbeOutcome, ProbeTarget
from krnet.core.model.peers import (
    VTEP_NAME,
    PathBook,
    Peer,
    PeerPath,
    runner_subnet,
    vtep_address,
    vtep_mac,
    vtep_vni,
)
from krnet.core.model.plan import OverlayPlan
from krnet.errors import KernelError

if TYPE_CHECKING:
    from krnet.core.dataplane.interfaces import Kernel, RunnerAllocation


class DirectPlane:
    """This runner's VTEP and the entries and paths of its direct peers."""

    def __init__(self, plan: OverlayPlan, kernel: Kernel) -> None:
        self.plan = plan  # until an allocation says the host's scheme
        self.kernel = kernel
        self.book = PathBook()
        self._peers: tuple[Peer, ...] = ()

    def ensure(self, allocation: RunnerAllocation, peers: Sequence[Peer]) -> list[str]:
        """Converge `vxkrd` and exactly `peers`' entries (this runner itself left out)."""
        self.plan = allocation_plan(allocation)
        top = self.plan.max_runners
        outside = sorted(p.runner_id for p in peers if not 1 <= p.runner_id <= top)
        if outside:
            raise KernelError(
                f"peer table names runner ids {outside} outside this plan's 1.."
                f"{self.plan.max_runners}: the host and this runner disagree on the overlay "
                "scheme; check overlay_host_ip, overlay_host_prefix and overlay_runner_prefix"
            )
        self._peers = tuple(p for p in peers if p.runner_id != allocation.runner_id)
        self.book.track(self._peers, datetime.now(timezone.utc))
        me = allocation.runner_id
        with self.kernel.session([VTEP_NAME]) as links:
            changes = links.ensure_vxlan(
                VTEP_NAME,
                vni=vtep_vni(self.plan),
                local=allocation.runner_physical_ip,
                remote=None,
                port=allocation.vxlan_port,
                mtu=allocation.mtu,
                address=IPv4Interface(f"{vtep_address(self.plan, me)}/32"),
                mac=vtep_mac(me),
            )
            changes += links.ensure_peer_entries(VTEP_NAME, self.entries())
        return changes

    def entries(self) -> list[PeerEntry]:
        """Each peer's neighbour, FDB entry and routes, its subnet route only while direct."""
        return [
            PeerEntry(
                vtep_ip=str(vtep_address(self.plan, peer.runner_id)),
                mac=vtep_mac(peer.runner_id),
                physical_ip=peer.physical_ip,
                subnet=str(runner_subnet(self.plan, peer.runner_id)),
                direct=self.book.path(peer.runner_id) == "direct",
            )
            for peer in self._peers
        ]

    def targets(self) -> list[ProbeTarget]:
        """One probe per peer: out of `vxkrd` to its VTEP address."""
        return [
            ProbeTarget(peer.runner_id, VTEP_NAME, str(vtep_address(self.plan, peer.runner_id)))
            for peer in self._peers
        ]

    def record(self, outcomes: Sequence[ProbeOutcome]) -> list[str]:
        """Feed one round to the book; on any switch, the routes follow. Events, then changes."""
        now = datetime.now(timezone.utc)
        events = [
            event
            for outcome in outcomes
            if (event := self.book.record(outcome.runner_id, outcome.full_rtt_ms is not None, now))
        ]
        if not events:
            return []
        with self.kernel.session([VTEP_NAME]) as links:
            return events + links.ensure_peer_entries(VTEP_NAME, self.entries())

    def withdraw(self) -> list[str]:
        """Remove `vxkrd`; its neighbours, FDB entries and routes go with the link."""
        self._peers = ()
        self.book.track((), datetime.now(timezone.utc))
        with self.kernel.session([VTEP_NAME]) as links:
            return links.remove_link(VTEP_NAME)

    @property
    def peer_addresses(self) -> list[str]:
        """The peers' underlay addresses, which the runner's VXLAN port guard admits."""
        return [peer.physical_ip for peer in self._peers]

    def paths(self) -> tuple[PeerPath, ...]:
        """Each pair's path, as the runner reports it."""
        return self.book.paths()


def allocation_plan(allocation: RunnerAllocation) -> OverlayPlan:
    """The host's address plan as the allocation carries it: a runner follows the host's scheme,
    whatever its own settings say (peers' VTEP addresses and subnets come from it)."""
    return OverlayPlan.build(
        allocation.host_overlay_ip,
        IPv4Network(allocation.overlay_cidr).prefixlen,
        IPv4Network(allocation.subnet).prefixlen,
        allocation.vxlan_id,
    )
