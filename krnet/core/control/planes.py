"""The seam between the control plane and the kernel: what the host service and agent call.

The control plane decides; a data plane builds. Calls are blocking (netlink, iptables, Docker)
and the asyncio side runs them with asyncio.to_thread. The real implementations live in
`krnet.core.dataplane.host_plane` and `runner_plane`, imported only when the overlay is on;
this module builds them from their real handles and records what they change and adopt in
the store (the data plane never imports the record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from krnet.core.control.counters import COUNTERS
from krnet.core.model.report import RunnerReport

if TYPE_CHECKING:
    from krnet.core.dataplane.interfaces import Adoption, PlaneEvents
    from krnet.core.model.peers import Peer
    from krnet.core.model.records import RunnerRecord
    from krnet.core.model.settings import Settings
    from krnet.core.protocol.messages import Allocation
    from krnet.core.record.store import Store
    from krnet.errors import KrnetError


class HostDataPlane(Protocol):
    def runner_up(self, runner: RunnerRecord, allocation: Allocation) -> None:
        """Build or update vxkrN (remote = runner.physical_ip) for a joined runner; raises
        KrnetError when it could not (the batch of one)."""

    def runners_up(
        self, batch: Sequence[tuple[RunnerRecord, Allocation]]
    ) -> Mapping[int, KrnetError]:
        """Build or update the tunnels of joins decided together, in one kernel and one
        firewall pass.

        Returns the runners the kernel refused (runner id -> error): only those joins are
        refused, every other runner's tunnel is built and read back. Raises KrnetError for a
        failure the whole batch shares (the host device, the firewall): every join of the
        batch is refused.
        """

    def runner_gone(self, runner_id: int) -> None:
        """Remove vxkrN after the runner left or its id went to another runner."""

    def reconcile(self, runners: Sequence[RunnerRecord]) -> None:
        """Converge the kernel on the record; called at start and every reconcile_interval."""

    def released(self, runner_ids: Sequence[int]) -> None:
        """Ids released by hand before this start: their tunnels are removed, never adopted."""

    def probe(self, runner_ids: Sequence[int]) -> None:
        """One DF probe round through these runners' tunnels, published for status and doctor."""


class RunnerDataPlane(Protocol):
    def prepare(self) -> None:
        """Before any join: what containers need while the overlay is not (yet) configured."""

    def apply(self, allocation: Allocation) -> None:
        """Build the bridge, vxlan0, routes, firewall and Docker network of an allocation."""

    def observe(self) -> RunnerReport:
        """The link state this runner sees, reported in heartbeats for mismatch detection."""

    def withdraw(self) -> list[str]:
        """Give up a lost allocation: its links, rules and overlay network (docs/operations.md)."""

    def apply_peers(self, peers: Sequence[Peer]) -> None:
        """Direct mode: build `vxkrd` and exactly these peers' route, neighbour and FDB entries."""

    def withdraw_direct(self) -> list[str]:
        """Hub mode (or leaving): remove `vxkrd` and every peer entry with it."""

    def probe_peers(self) -> None:
        """Direct mode, every probe_interval: probe each pair; three in a row switch its path."""


@dataclass
class NullHostDataPlane:
    """Records calls instead of touching the kernel: overlay disabled, and root-free tests."""

    calls: list[tuple[str, object]] = field(default_factory=list)

    def runner_up(self, runner: RunnerRecord, allocation: Allocation) -> None:
        self.calls.append(("runner_up", allocation))

    def runners_up(
        self, batch: Sequence[tuple[RunnerRecord, Allocation]]
    ) -> Mapping[int, KrnetError]:
        for runner, allocation in batch:
            self.runner_up(runner, allocation)
        return {}

    def runner_gone(self, runner_id: int) -> None:
        self.calls.append(("runner_gone", runner_id))

    def reconcile(self, runners: Sequence[RunnerRecord]) -> None:
        self.calls.append(("reconcile", [runner.runner_id for runner in runners]))

    def released(self, runner_ids: Sequence[int]) -> None:
        self.calls.append(("released", list(runner_ids)))

    def probe(self, runner_ids: Sequence[int]) -> None:
        self.calls.append(("probe", list(runner_ids)))


@dataclass
class NullRunnerDataPlane:
    """Records allocations instead of building links: overlay disabled, and root-free tests."""

    calls: list[tuple[str, object]] = field(default_factory=list)

    def prepare(self) -> None:
        self.calls.append(("prepare", None))

    def apply(self, allocation: Allocation) -> None:
        self.calls.append(("apply", allocation))

    def observe(self) -> RunnerReport:
        return RunnerReport()

    def withdraw(self) -> list[str]:
        self.calls.append(("withdraw", None))
        return []

    def apply_peers(self, peers: Sequence[Peer]) -> None:
        self.calls.append(("apply_peers", tuple(peers)))

    def withdraw_direct(self) -> list[str]:
        self.calls.append(("withdraw_direct", None))
        return []

    def probe_peers(self) -> None:
        self.calls.append(("probe_peers", None))


@dataclass
class RecordedEvents:
    """A plane's changes as `reconcile` events (a pass's in one transaction) and its adoptions
    as inactive runners."""

    store: Store

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        self.store.record_events("reconcile", changes)

    def adopted(self, adoption: Adoption) -> None:
        self.store.adopt(
            adoption.runner_id,
            physical_ip=adoption.physical_ip,
            vni=adoption.vni,
            subnet=adoption.subnet,
            now=datetime.now(timezone.utc),
        )


class UnrecordedEvents:
    """Without a store the planes' own log lines are all that is kept."""

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        """Nothing to record: the plane has logged the changes."""

    def adopted(self, adoption: Adoption) -> None:
        """Nothing to record: the plane has logged the adoption."""


@dataclass
class CountedEvents:
    """A plane's events counted for `/metrics` on their way to where they are kept."""

    kept: PlaneEvents

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        for change, _ in changes:
            COUNTERS.changed(change)
        self.kept.changed(changes)

    def adopted(self, adoption: Adoption) -> None:
        COUNTERS.adopted()
        self.kept.adopted(adoption)


def plane_events(store: Store | None) -> PlaneEvents:
    """Where a plane's events go: counted, then the store when there is one."""
    return CountedEvents(UnrecordedEvents() if store is None else RecordedEvents(store))


def make_host_dataplane(settings: Settings, store: Store | None = None) -> HostDataPlane:
    """The kernel data plane when the overlay is enabled, else the null one."""
    if not settings.overlay_enabled:
        return NullHostDataPlane()
    from krnet.core.dataplane import probe
    from krnet.core.dataplane.firewall import NodeFirewall
    from krnet.core.dataplane.host_plane import HostPlane
    from krnet.core.dataplane.netlink import Netlink

    return HostPlane(
        settings,
        Netlink(),
        NodeFirewall(),
        plane_events(store),
        prober=probe.send_probes,
        results_file=None if store is None else store.path.parent / probe.RESULTS_FILE,
    )


def make_runner_dataplane(settings: Settings, store: Store | None = None) -> RunnerDataPlane:
    """The kernel and Docker data plane (with the overlay off it only keeps the default network)."""
    from krnet.core.dataplane.dockernet import Docker
    from krnet.core.dataplane.firewall import NodeFirewall
    from krnet.core.dataplane.netlink import Netlink
    from krnet.core.dataplane.runner_plane import RunnerPlane

    return RunnerPlane(settings, Netlink(), NodeFirewall(), Docker(), plane_events(store))
