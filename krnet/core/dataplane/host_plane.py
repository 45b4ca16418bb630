"""The host's data plane: `kohaku-host`, one `vxkrN` per runner, forwarding and firewall.

Interfaces are the kernel's truth and the record says who owns which id; `reconcile` makes
the two agree (recreate what the kernel lost, adopt what the record lost, fix drift), and
every change is logged and handed to the events it was given (the control layer records
them). Kernel, firewall and prober come from outside too, so its decisions are unit-tested
with fakes. Blocking: the service calls it in a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv4Interface, ip_address
from typing import TYPE_CHECKING

from krnet.core.dataplane import firewall, probe
from krnet.core.dataplane.interfaces import Adoption, VxlanSpec
from krnet.core.dataplane.netlink.state import stable_mac
from krnet.core.model.plan import HOST_DEVICE, OverlayPlan, runner_id_from_tunnel, tunnel_name
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from krnet.core.dataplane.interfaces import (
        Firewall,
        Kernel,
        LinkSession,
        PlaneEvents,
        Prober,
        RunnerAllocation,
    )
    from krnet.core.model.node_state import LinkInfo
    from krnet.core.model.records import RunnerRecord
    from krnet.core.model.settings import Settings

log = logging.getLogger("krnet.host")

HOST_ROLE = "vxkr"


class HostPlane:
    """Builds and repairs the host's side of every runner's tunnel."""

    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        firewall: Firewall,
        events: PlaneEvents,
        *,
        prober: Prober,
        results_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.plan: OverlayPlan = settings.plan()
        self.kernel = kernel
        self.firewall = firewall
        self.events = events
        self.prober = prober
        self.results_file = results_file  # where probe results are published, if anywhere
        self._configured_local = _usable_local(settings.host_reachable_address)
        self._learned_local: str | None = None
        self._peers: dict[int, str] = {}
        self._released: set[int] = set()  # ids the record freed: removed, never adopted back
        self._built: set[int] = set()  # ids whose tunnel was built and read back: probed
        self._fixed: dict[int, tuple[int, IPv4Interface, str]] = {}  # id -> VNI, address, MAC
        self._lock = threading.Lock()  # one writer at a time: joins and reconcile both land here
        self._probes = probe.ProbeBook()

    # -- the seam the host service calls --------------------------------------------------------

    def runner_up(self, runner: RunnerRecord, allocation: RunnerAllocation) -> None:
        """Build or update runner's `vxkrN` after a join or an address change."""
        refused = self.runners_up([(runner, allocation)])
        if runner.runner_id in refused:
            raise refused[runner.runner_id]

    def runners_up(
        self, batch: Sequence[tuple[RunnerRecord, RunnerAllocation]]
    ) -> dict[int, KrnetError]:
        """Build the tunnels of joins decided together in one netlink and one firewall pass;
        returns the runners the kernel refused (the rest are built and read back).

        The links' changes are recorded in one transaction as soon as the netlink pass ends
        (before the firewall pass, after which one commit per change used to begin), the
        firewall's in one after its pass: a crash keeps whatever that path would have kept."""
        with self._lock:
            for runner, allocation in batch:
                if _usable_local(allocation.host_physical_ip):
                    self._learned_local = allocation.host_physical_ip
                self._released.discard(runner.runner_id)
            lone = batch[0][0].runner_id if len(batch) == 1 else None  # whom shared changes name
            names = [HOST_DEVICE, *(tunnel_name(runner.runner_id) for runner, _ in batch)]
            remotes = {runner.runner_id: runner.physical_ip for runner, _ in batch}
            with self.kernel.session(names) as links:
                changes = _named(self._ensure_base(links), lone)
                built, refused = self._build_tunnels(links, remotes)
            self._peers |= {runner_id: remotes[runner_id] for runner_id in built}
            self._report(changes + [(c, rid) for rid, made in built.items() for c in made])
            self._report(_named(self._ensure_firewall(), lone))
        return refused

    def runner_gone(self, runner_id: int) -> None:
        """Remove a runner's tunnel after `leave` or when its id is reclaimed for another."""
        with self._lock:
            self._peers.pop(runner_id, None)
            self._built.discard(runner_id)
            self._released.add(runner_id)  # a failed removal or a stale reconcile: no adoption
            tunnel = tunnel_name(runner_id)
            with self.kernel.session([tunnel]) as links:
                changes = links.remove_link(tunnel)
            changes += self._ensure_firewall()
            self._report(_named(changes, runner_id))

    def released(self, runner_ids: Sequence[int]) -> None:
        """Ids the record freed before this process started: reconcile removes their tunnels."""
        with self._lock:
            self._released.update(set(runner_ids) - set(self._peers))

    def probe(self, runner_ids: Sequence[int]) -> None:
        """A DF echo at the full overlay MTU (and a small one) through each tunnel, published
        to the results file (`<data dir>/probes.json`) for `node overlay`, `doctor` and the TUI."""
        built = set(self._built)  # a runner is probed once its tunnel exists, not before
        targets = probe.probe_targets(self.plan, [rid for rid in runner_ids if rid in built])
        now = datetime.now(timezone.utc)
        self._probes.record_all(self.prober(targets, self.settings.overlay_mtu), now)
        for gone in set(self._probes.runner_ids()) - set(runner_ids):
            self._probes.forget(gone)
        if self.results_file is not None:
            probe.write_results(self.results_file, self._probes.results(), now)

    def reconcile(self, runners: Sequence[RunnerRecord]) -> None:
        """Make kernel and record agree: recreate lost tunnels, adopt unknown ones, fix drift."""
        with self._lock:
            # a record read before a release finished must not bring the tunnel back
            known = {r.runner_id: r for r in runners if r.runner_id not in self._released}
            changes, adopted = self._reconcile_links(known)
            self._peers = {rid: record.physical_ip for rid, record in known.items()} | adopted
            try:  # re-applied whatever the kernel refused above: the guard must not lapse
                changes += self._ensure_firewall()
            finally:
                self._report(_named(changes, None))

    def _reconcile_links(self, known: dict[int, RunnerRecord]) -> tuple[list[str], dict[int, str]]:
        """The base links and every recorded tunnel, each on its own: one the kernel refuses
        (a bad record) is an event and a log line, never the end of the pass."""
        changes: list[str] = []
        adopted: dict[int, str] = {}
        try:
            with self.kernel.session() as links:
                try:
                    changes += self._ensure_base(links)
                except KrnetError as exc:
                    self._failed(f"{HOST_DEVICE} and forwarding", exc, None)
                try:
                    changes += self._remove_released(links)
                except KrnetError as exc:
                    self._failed("released tunnels", exc, None)
                self._built.clear()  # this pass says which tunnels stand
                remotes = {rid: record.physical_ip for rid, record in sorted(known.items())}
                built, refused = self._build_tunnels(links, remotes)
                changes += [change for made in built.values() for change in made]
                for runner_id, refusal in refused.items():
                    self._failed(tunnel_name(runner_id), refusal, runner_id)
                adopted = self._adopt_unknown_tunnels(links.links, known)
                self._built |= set(adopted)
        except KrnetError as exc:  # the link dump itself
            self._failed("the kernel's links", exc, None)
        return changes, adopted

    def _failed(self, what: str, exc: KrnetError, runner_id: int | None) -> None:
        change = f"{what}: not repaired: {exc}"
        log.error("%s", change)
        self.events.changed([(change, runner_id)])

    # -- pieces -------------------------------------------------------------------------------

    @property
    def local_address(self) -> str | None:
        """The underlay address tunnels start from; None lets the kernel pick by route."""
        return self._configured_local or self._learned_local

    def _ensure_base(self, links: LinkSession) -> list[str]:
        changes = self.kernel.ensure_sysctl("net.ipv4.ip_forward", "1")
        changes += links.ensure_host_device(HOST_DEVICE, self.plan.host_interface)
        return changes

    def _build_tunnels(
        self, links: LinkSession, remotes: Mapping[int, str]
    ) -> tuple[dict[int, list[str]], dict[int, KrnetError]]:
        """Every runner's tunnel in one pass: what each built one changed, and who was refused."""
        specs = {
            tunnel_name(rid): self._tunnel_spec(rid, remote) for rid, remote in remotes.items()
        }
        outcome = links.ensure_tunnels(specs)
        built: dict[int, list[str]] = {}
        refused: dict[int, KrnetError] = {}
        for runner_id in remotes:
            result = outcome[tunnel_name(runner_id)]
            if isinstance(result, KrnetError):
                refused[runner_id] = result
            else:
                built[runner_id] = result
        self._built = (self._built | set(built)) - set(refused)
        return built, refused

    def _tunnel_spec(self, runner_id: int, remote: str) -> VxlanSpec:
        """Kept per id (address and MAC cost most of a quiet reconcile at 1,000 runners)."""
        if runner_id not in self._fixed:
            addresses = self.plan.runner(runner_id)
            mac = stable_mac(HOST_ROLE, addresses.vni)
            self._fixed[runner_id] = (addresses.vni, addresses.host_interface_address, mac)
        vni, address, mac = self._fixed[runner_id]
        settings = self.settings
        return VxlanSpec(
            vni=vni,
            local=self.local_address,
            remote=remote,
            port=settings.overlay_vxlan_port,
            mtu=settings.overlay_mtu,
            address=address,
            mac=mac,
        )

    def _remove_released(self, links: LinkSession) -> list[str]:
        """Tunnels of released ids still in the kernel (a removal that failed, a race)."""
        changes: list[str] = []
        for runner_id in sorted(self._released):
            name = tunnel_name(runner_id)
            if name in links.links:
                changes += links.remove_link(name)
        return changes

    def _adopt_unknown_tunnels(
        self, links: Mapping[str, LinkInfo], known: dict[int, RunnerRecord]
    ) -> dict[int, str]:
        """Tunnels the kernel has and the record lost become inactive records, not orphans."""
        adopted = _unknown_tunnels(self.plan, links, set(known) | self._released)
        for runner_id, remote in adopted.items():
            addresses = self.plan.runner(runner_id)
            self.events.adopted(Adoption(runner_id, remote, addresses.vni, str(addresses.subnet)))
            log.info(
                "adopted %s (runner %d at %s) as inactive",
                tunnel_name(runner_id),
                runner_id,
                remote,
            )
        return adopted

    def _ensure_firewall(self) -> list[str]:
        plan = firewall.FirewallPlan(
            mode="host",
            overlay_cidr=str(self.plan.network),
            vxlan_port=self.settings.overlay_vxlan_port,
            guard_enabled=self.settings.vxlan_port_guard,
            guard_peers=sorted(set(self._peers.values())),
            interfaces=[tunnel_name(runner_id) for runner_id in sorted(self._peers)],
        )
        return self.firewall.ensure(plan)

    def _report(self, changes: list[tuple[str, int | None]]) -> None:
        """Logged one by one, handed over together: the record keeps a pass in one commit."""
        for change, _ in changes:
            log.info("%s", change)
        self.events.changed(changes)


def _named(changes: list[str], runner_id: int | None) -> list[tuple[str, int | None]]:
    """Changes that all tell of one runner (or of none)."""
    return [(change, runner_id) for change in changes]


def _unknown_tunnels(
    plan: OverlayPlan, links: Mapping[str, LinkInfo], skip: set[int]
) -> dict[int, str]:
    """krnet's tunnels in the plan with a remote and an id not in `skip`: id -> remote."""
    found: dict[int, str] = {}
    for name, link in links.items():
        runner_id = runner_id_from_tunnel(name)
        if runner_id is None or runner_id in skip or runner_id > plan.max_runners:
            continue
        if link.vxlan is not None and link.vxlan.remote:
            found[runner_id] = link.vxlan.remote
    return found


def _usable_local(address: str | None) -> str | None:
    """An address a tunnel may start from: not loopback, not unspecified."""
    if not address:
        return None
    parsed = ip_address(address)
    if not isinstance(parsed, IPv4Address) or parsed.is_loopback or parsed.is_unspecified:
        return None
    return address
