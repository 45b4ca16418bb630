"""The real `Kernel` handle the planes are given: netlink passes and sysctls of this node."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from krnet.core.dataplane import sysctl
from krnet.core.dataplane.netlink import batch, links, peers, routes
from krnet.core.dataplane.netlink.state import KernelState, open_netlink
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from pyroute2 import IPRoute
    from typing_extensions import Unpack  # typing has them from 3.11

    from krnet.core.dataplane.interfaces import PeerEntry, VxlanSpec
    from krnet.core.model.node_state import LinkInfo


class NetlinkSession:
    """One netlink socket and the state it dumped, for the ensures of one pass."""

    def __init__(self, ipr: IPRoute, state: KernelState) -> None:
        self.ipr = ipr
        self.state = state

    @property
    def links(self) -> Mapping[str, LinkInfo]:
        return self.state.links

    def ensure_host_device(self, name: str, interface: IPv4Interface) -> list[str]:
        return links.ensure_host_device(self.ipr, self.state, name, interface)

    def ensure_bridge(
        self, name: str, *, interface: IPv4Interface, mtu: int, mac: str
    ) -> list[str]:
        return links.ensure_bridge(
            self.ipr, self.state, name, interface=interface, mtu=mtu, mac=mac
        )

    def ensure_vxlan(self, name: str, **spec: Unpack[VxlanSpec]) -> list[str]:
        return links.ensure_vxlan(self.ipr, self.state, name, **spec)

    def ensure_tunnels(self, specs: Mapping[str, VxlanSpec]) -> dict[str, list[str] | KrnetError]:
        """Tunnels this pass did not find are built in one `ip -batch` and read back in one
        dump; the others, and any the batch did not build right, converge one by one (which
        names the kernel's refusal). Each name's changes, or why it failed."""
        outcome: dict[str, list[str] | KrnetError] = {}
        new = {name: spec for name, spec in specs.items() if name not in self.state.links}
        built = batch.build_tunnels(new) if new else {}
        for name, spec in specs.items():
            link = built.get(name)
            if link is not None:
                self.state.put(link)
                try:
                    outcome[name] = [links.created(name, links.verify_tunnel(link, spec))]
                    continue
                except KrnetError:
                    pass  # repaired (and reported) below, as any drifted tunnel
            try:
                outcome[name] = links.ensure_vxlan(self.ipr, self.state, name, **spec)
            except KrnetError as exc:
                outcome[name] = exc
        return outcome

    def ensure_route(
        self, dst: IPv4Network, *, via: IPv4Address | None = None, dev: str | None = None
    ) -> list[str]:
        return routes.ensure_route(self.ipr, self.state, dst, via=via, dev=dev)

    def ensure_peer_entries(self, vtep: str, entries: Sequence[PeerEntry]) -> list[str]:
        return peers.ensure_peer_entries(self.state, vtep, entries)

    def remove_link(self, name: str) -> list[str]:
        return links.remove_link(self.ipr, self.state, name)


class Netlink:
    """The kernel of the namespace krnet runs in."""

    @contextmanager
    def session(self, names: Iterable[str] | None = None) -> Iterator[NetlinkSession]:
        """A full dump (names None: links and routes) or only the named links, read with
        `ip -j` (netlink.batch: pyroute2's dumps grew to seconds), written on one socket."""
        links = batch.read_links_json(names)
        routes = batch.read_routes_json() if names is None else ()
        state = KernelState(
            links=links,
            routes=routes,
            names={link.index: name for name, link in links.items()},
            routes_stale=names is not None,
        )
        with open_netlink() as ipr:
            yield NetlinkSession(ipr, state)

    def links(self) -> Mapping[str, LinkInfo]:
        return batch.read_links_json()

    def ensure_sysctl(self, key: str, value: str) -> list[str]:
        return sysctl.ensure_sysctl(key, value)
