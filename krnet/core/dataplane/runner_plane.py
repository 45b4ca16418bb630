"""The runner's data plane: bridge, `vxlan0`, the route to the overlay, NAT and Docker network.

The kernel side comes first and does not depend on Docker: a runner whose Docker is down still
has its tunnel, and the Docker network is created once Docker answers (`observe` retries it on
every heartbeat). Which network containers should use follows the reference's selection table.
Kernel, firewall, Docker and where events go come from outside, so its decisions are
unit-tested with fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from krnet.core.dataplane import dockernet, firewall, probe, sysctl
from krnet.core.dataplane.direct_plane import DirectPlane
from krnet.core.dataplane.netlink.state import stable_mac
from krnet.core.model.peers import VTEP_NAME
from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.model.report import RunnerReport
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.core.dataplane.interfaces import (
        DockerNetworks,
        Firewall,
        Kernel,
        PlaneEvents,
        Prober,
        RunnerAllocation,
    )
    from krnet.core.model.node_state import LinkInfo
    from krnet.core.model.peers import Peer
    from krnet.core.model.settings import Settings

log = logging.getLogger("krnet.runner")

RUNNER_ROLE = "vxlan0"
BRIDGE_ROLE = "bridge"


class RunnerPlane:
    """Builds and repairs this runner's side of its tunnel and its Docker network."""

    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        firewall: Firewall,
        docker: DockerNetworks,
        events: PlaneEvents,
        prober: Prober = probe.send_probes,
    ) -> None:
        self.settings = settings
        self.kernel = kernel
        self.firewall = firewall
        self.docker = docker
        self.events = events
        self.prober = prober
        self.direct = DirectPlane(settings.plan(), kernel)
        self._allocation: RunnerAllocation | None = None
        self._overlay_ready = False
        self._docker_ready = False
        self._docker_error: str | None = None
        self._reconciled_at = 0.0
        self._reconcile_error: str | None = None
        self._peers: tuple[Peer, ...] | None = None  # None: hub mode
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Before any join: the default network, so containers have one if the overlay fails."""
        with self._lock:
            self._ensure_docker()

    def apply(self, allocation: RunnerAllocation) -> None:
        """Converge kernel, firewall and Docker to `allocation`; falls back to the default net."""
        with self._lock:
            self._allocation = allocation
            self._converge(allocation)

    def _converge(self, allocation: RunnerAllocation) -> None:
        try:
            changes = self._ensure_kernel(allocation) + self._ensure_direct(allocation)
            changes += self._ensure_firewall(allocation)
        except KrnetError:
            self._overlay_ready = False
            self._ensure_docker()
            raise
        self._overlay_ready = True
        self._ensure_docker()
        # Docker puts its own FORWARD jumps on top when it creates a network: ours go back first.
        changes += self._ensure_firewall(allocation)
        self._reconciled_at = time.monotonic()
        self._tell(changes)

    def _tell(self, changes: list[str]) -> None:
        runner_id = self._allocation.runner_id if self._allocation else None
        for change in changes:
            log.info("%s", change)
        self.events.changed([(change, runner_id) for change in changes])  # the TUI's Events tab

    def _reconcile_if_due(self) -> None:
        """Repair drift (links, routes, rules changed by hand or by Docker) every interval."""
        due = self._reconciled_at + self.settings.reconcile_interval
        if self._allocation is None or time.monotonic() < due:
            return
        try:
            self._converge(self._allocation)
        except KrnetError as exc:
            if str(exc) != self._reconcile_error:  # once per distinct failure, not every heartbeat
                log.error("reconcile failed: %s", exc)
            self._reconcile_error = str(exc)
            return
        self._reconcile_error = None

    def observe(self) -> RunnerReport:
        """What this runner's tunnel really looks like, for heartbeats and mismatch detection."""
        with self._lock:
            self._reconcile_if_due()
            if not self._docker_ready:
                self._ensure_docker()
            bridge_name = self._allocation.bridge_name if self._allocation else None
            return replace(
                link_report(self.kernel.links(), bridge_name),
                docker_available=self._docker_ready,
                docker_error=self._docker_error,
                network=self.selected_network,
                direct_peers=self.direct.paths(),
            )

    def withdraw(self) -> list[str]:
        """Give up an allocation this runner lost (its id belongs to another runner now).

        `vxlan0` (the VNI is someone else's), krnet's rules and the overlay Docker network go;
        the bridge (its gateway address and the route to the overlay with it) goes too, unless
        containers are still attached to the overlay network: then both are kept and that is
        said. Containers are pointed at the default network from now on.
        """
        with self._lock:
            held, self._allocation, self._overlay_ready = self._allocation, None, False
            bridge = held.bridge_name if held else self.settings.overlay_bridge_name
            port = held.vxlan_port if held else self.settings.overlay_vxlan_port
            try:
                docker = self.docker.remove(self.settings.overlay_network_name)
            except KrnetError as exc:
                docker = [f"Docker network {self.settings.overlay_network_name} not checked: {exc}"]
            keep_bridge = any(line.startswith("kept ") for line in docker)
            direct = self._peers is not None  # stays on: a new allocation builds a new VTEP
            changes = self.direct.withdraw() if direct else []
            with self.kernel.session([RUNNER_TUNNEL, bridge]) as links:
                changes += links.remove_link(RUNNER_TUNNEL)
                if not keep_bridge:
                    changes += links.remove_link(bridge)
            interfaces = [bridge, RUNNER_TUNNEL, *([VTEP_NAME] if direct else [])]
            changes += self.firewall.remove(interfaces, port) + docker
            if keep_bridge:
                changes.append(f"kept {bridge}: containers are still attached to it")
            self._ensure_docker()
        for change in changes:
            log.warning("lost allocation: %s", change)
        return changes

    def apply_peers(self, peers: Sequence[Peer]) -> None:
        """Direct mode on with exactly these peers; built now, or by `apply` once allocated."""
        with self._lock:
            self._peers = tuple(peers)
            if self._allocation is not None:
                changes = self._ensure_direct(self._allocation)
                self._tell(changes + self._ensure_firewall(self._allocation))

    def withdraw_direct(self) -> list[str]:
        """Direct mode off: `vxkrd` and every peer entry go, the guard admits the host alone.

        Also called at a first hub welcome: a `vxkrd` left from before is removed (one read of
        the link when there is none); the guard is rebuilt only if this process admitted peers.
        """
        with self._lock:
            was_direct, self._peers = self._peers is not None, None
            changes = self.direct.withdraw()
            if was_direct and self._allocation is not None:
                changes += self._ensure_firewall(self._allocation)
            self._tell(changes)
        return changes

    def probe_peers(self) -> None:
        """One DF probe round to every direct peer; a pair's route follows its path."""
        with self._lock:
            targets = self.direct.targets() if self._peers is not None else []
            mtu = self._allocation.mtu if self._allocation else self.settings.overlay_mtu
        if not targets:
            return
        outcomes = self.prober(targets, mtu)  # up to a second: not under the lock
        with self._lock:
            if self._peers is not None and self._allocation is not None:
                self._tell(self.direct.record(outcomes))

    @property
    def selected_network(self) -> str:
        """The Docker network containers should use (reference: "Network Selection")."""
        return dockernet.select_network(self.settings, self._overlay_ready)

    # -- pieces -------------------------------------------------------------------------------

    def _ensure_kernel(self, allocation: RunnerAllocation) -> list[str]:
        subnet = IPv4Network(allocation.subnet)
        gateway = IPv4Interface(f"{allocation.gateway}/{subnet.prefixlen}")
        with self.kernel.session() as links:
            changes = self.kernel.ensure_sysctl("net.ipv4.ip_forward", "1")
            changes += links.ensure_bridge(
                allocation.bridge_name,
                interface=gateway,
                mtu=allocation.mtu,
                mac=stable_mac(BRIDGE_ROLE, allocation.vni),
            )
            changes += links.ensure_vxlan(
                RUNNER_TUNNEL,
                vni=allocation.vni,
                local=allocation.runner_physical_ip,
                remote=allocation.host_physical_ip,
                port=allocation.vxlan_port,
                mtu=allocation.mtu,
                master=allocation.bridge_name,
                mac=stable_mac(RUNNER_ROLE, allocation.vni),
            )
            for key in sysctl.redirect_keys(allocation.bridge_name):  # issue #15's pitfall
                changes += self.kernel.ensure_sysctl(key, "0")
            changes += links.ensure_route(
                IPv4Network(allocation.overlay_cidr),
                via=IPv4Address(allocation.host_ip_on_subnet),
            )
        return changes

    def _ensure_direct(self, allocation: RunnerAllocation) -> list[str]:
        """Direct mode: the VTEP and the peers' entries; hub mode: nothing."""
        return [] if self._peers is None else self.direct.ensure(allocation, self._peers)

    def _ensure_firewall(self, allocation: RunnerAllocation) -> list[str]:
        peers = None if self._peers is None else self.direct.peer_addresses
        return self.firewall.ensure(firewall_plan(self.settings, allocation, peers))

    def _ensure_docker(self) -> None:
        """The default network always, the overlay one once configured; Docker down is no error.

        Both exist side by side; which one containers use follows the reference's selection
        table (`selected_network`), so a failed overlay leaves them a working network.
        """
        specs = [dockernet.default_network_spec(self.settings)]
        if self._overlay_ready and self._allocation is not None:
            specs.append(dockernet.overlay_network_spec(self.settings, self._allocation))
        try:
            for change in self.docker.ensure(specs):
                log.info("%s", change)
        except KrnetError as exc:
            if str(exc) != self._docker_error:  # once per distinct failure, not every heartbeat
                log.warning("%s", exc)
            self._docker_ready, self._docker_error = False, str(exc)
            return
        if self._docker_error is not None:
            log.info("Docker answers again: %s in place", ", ".join(spec.name for spec in specs))
        self._docker_ready, self._docker_error = True, None


def link_report(links: Mapping[str, LinkInfo], bridge_name: str | None) -> RunnerReport:
    """The link part of the report: `vxlan0` and the bridge as the kernel has them."""
    tunnel = links.get(RUNNER_TUNNEL)
    vxlan = tunnel.vxlan if tunnel else None
    bridge = links.get(bridge_name) if bridge_name else None
    return RunnerReport(
        tunnel_present=tunnel is not None,
        vni=vxlan.vni if vxlan else None,
        remote=vxlan.remote if vxlan else None,
        local=vxlan.local if vxlan else None,
        port=vxlan.port if vxlan else None,
        mtu=tunnel.mtu if tunnel else None,
        bridge_mtu=bridge.mtu if bridge else None,
        bridge_addresses=tuple(bridge.addresses) if bridge else (),
        tunnel_up=bool(tunnel and tunnel.up),
    )


def firewall_plan(
    settings: Settings, allocation: RunnerAllocation, peers: Sequence[str] | None
) -> firewall.FirewallPlan:
    """A runner's rules; its VXLAN guard admits the host and, in direct mode (peers given),
    every peer's underlay address, and `vxkrd` joins the trusted interfaces."""
    direct = [] if peers is None else [VTEP_NAME]
    return firewall.FirewallPlan(
        mode="runner",
        overlay_cidr=allocation.overlay_cidr,
        vxlan_port=allocation.vxlan_port,
        guard_enabled=settings.vxlan_port_guard,
        guard_peers=[allocation.host_physical_ip, *(peers or [])],
        interfaces=[allocation.bridge_name, RUNNER_TUNNEL, *direct],
    )
