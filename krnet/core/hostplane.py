"""The host's data plane: `kohaku-host`, one `vxkrN` per runner, forwarding and firewall.

Interfaces are the kernel's truth and the record says who owns which id; `reconcile` makes
the two agree (recreate what the kernel lost, adopt what the record lost, fix drift), and
every change is logged and recorded as an event. Blocking: the service calls it in a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING

from krnet.core import firewall, netlink, probe, sysctl
from krnet.core.plan import HOST_DEVICE, OverlayPlan, runner_id_from_tunnel, tunnel_name

if TYPE_CHECKING:
    from krnet.config import Settings
    from krnet.core.protocol import Allocation
    from krnet.core.records import RunnerRecord
    from krnet.core.store import Store

log = logging.getLogger("krnet.host")

HOST_ROLE = "vxkr"


class HostPlane:
    """Builds and repairs the host's side of every runner's tunnel."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.plan: OverlayPlan = settings.plan()
        self.store = store
        self._configured_local = _usable_local(settings.host_reachable_address)
        self._learned_local: str | None = None
        self._peers: dict[int, str] = {}
        self._lock = threading.Lock()  # one writer at a time: joins and reconcile both land here
        self._probes = probe.ProbeBook()

    # -- the seam the host service calls --------------------------------------------------------

    def runner_up(self, runner: RunnerRecord, allocation: Allocation) -> None:
        """Build or update runner's `vxkrN` after a join or an address change."""
        with self._lock:
            if _usable_local(allocation.host_physical_ip):
                self._learned_local = allocation.host_physical_ip
            self._peers[runner.runner_id] = runner.physical_ip
            with netlink.open_netlink() as ipr:
                names = [HOST_DEVICE, tunnel_name(runner.runner_id)]
                state = netlink.read_links(ipr, names)
                changes = self._ensure_base(ipr, state)
                changes += self._ensure_tunnel(ipr, state, runner.runner_id, runner.physical_ip)
            changes += self._ensure_firewall()
            self._report(changes, runner.runner_id)

    def runner_gone(self, runner_id: int) -> None:
        """Remove a runner's tunnel after `leave` or when its id is reclaimed for another."""
        with self._lock:
            self._peers.pop(runner_id, None)
            with netlink.open_netlink() as ipr:
                tunnel = tunnel_name(runner_id)
                changes = netlink.remove_link(ipr, netlink.read_links(ipr, [tunnel]), tunnel)
            changes += self._ensure_firewall()
            self._report(changes, runner_id)

    def probe(self, runner_ids: Sequence[int]) -> None:
        """A DF echo at the full overlay MTU (and a small one) through each tunnel, published
        to `<data dir>/probes.json` for `node overlay`, `doctor` and the TUI."""
        targets = probe.probe_targets(self.plan, runner_ids)
        now = datetime.now(timezone.utc)
        self._probes.record_all(probe.send_probes(targets, self.settings.overlay_mtu), now)
        for gone in set(self._probes.runner_ids()) - set(runner_ids):
            self._probes.forget(gone)
        if self.store is not None:
            results_file = self.store.path.parent / probe.RESULTS_FILE
            probe.write_results(results_file, self._probes.results(), now)

    def reconcile(self, runners: Sequence[RunnerRecord]) -> None:
        """Make kernel and record agree: recreate lost tunnels, adopt unknown ones, fix drift."""
        with self._lock:
            known = {runner.runner_id: runner for runner in runners}
            with netlink.open_netlink() as ipr:
                state = netlink.read_kernel_state(ipr)
                changes = self._ensure_base(ipr, state)
                for runner_id, record in sorted(known.items()):
                    changes += self._ensure_tunnel(ipr, state, runner_id, record.physical_ip)
                adopted = self._adopt_unknown_tunnels(state, known)
            self._peers = {rid: record.physical_ip for rid, record in known.items()} | adopted
            changes += self._ensure_firewall()
            self._report(changes, None)

    # -- pieces -------------------------------------------------------------------------------

    @property
    def local_address(self) -> str | None:
        """The underlay address tunnels start from; None lets the kernel pick by route."""
        return self._configured_local or self._learned_local

    def _ensure_base(self, ipr: object, state: netlink.KernelState) -> list[str]:
        changes = sysctl.ensure_sysctl("net.ipv4.ip_forward", "1")
        changes += netlink.ensure_host_device(ipr, state, HOST_DEVICE, self.plan.host_interface)
        return changes

    def _ensure_tunnel(
        self, ipr: object, state: netlink.KernelState, runner_id: int, remote: str
    ) -> list[str]:
        addresses = self.plan.runner(runner_id)
        return netlink.ensure_vxlan(
            ipr,
            state,
            addresses.host_interface,
            vni=addresses.vni,
            local=self.local_address,
            remote=remote,
            port=self.settings.overlay_vxlan_port,
            mtu=self.settings.overlay_mtu,
            address=addresses.host_interface_address,
            mac=netlink.stable_mac(HOST_ROLE, addresses.vni),
        )

    def _adopt_unknown_tunnels(
        self, state: netlink.KernelState, known: dict[int, RunnerRecord]
    ) -> dict[int, str]:
        """Tunnels the kernel has and the record lost become inactive records, not orphans."""
        adopted: dict[int, str] = {}
        for name, link in state.links.items():
            runner_id = runner_id_from_tunnel(name)
            if runner_id is None or runner_id in known or link.vxlan is None:
                continue
            if runner_id > self.plan.max_runners or not link.vxlan.remote:
                continue
            addresses = self.plan.runner(runner_id)
            adopted[runner_id] = link.vxlan.remote
            if self.store is not None:
                self.store.adopt(
                    runner_id,
                    physical_ip=link.vxlan.remote,
                    vni=addresses.vni,
                    subnet=str(addresses.subnet),
                    now=datetime.now(timezone.utc),
                )
            log.info("adopted %s (runner %d at %s) as inactive", name, runner_id, link.vxlan.remote)
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
        return firewall.ensure_firewall(plan, firewall.Iptables())

    def _report(self, changes: list[str], runner_id: int | None) -> None:
        for change in changes:
            log.info("%s", change)
            if self.store is not None:
                self.store.record_event("reconcile", change, runner_id)


def _usable_local(address: str | None) -> str | None:
    """An address a tunnel may start from: not loopback, not unspecified."""
    if not address:
        return None
    parsed = ip_address(address)
    if not isinstance(parsed, IPv4Address) or parsed.is_loopback or parsed.is_unspecified:
        return None
    return address
