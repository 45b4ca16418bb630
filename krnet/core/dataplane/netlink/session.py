"""The real `Kernel` handle the planes are given: netlink passes and sysctls of this node."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING

from krnet.core.dataplane import sysctl
from krnet.core.dataplane.netlink import links, peers, routes
from krnet.core.dataplane.netlink.state import (
    KernelState,
    open_netlink,
    read_kernel_state,
    read_links,
)

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
        """A full dump (names None) or only the named links, on one socket for the pass."""
        with open_netlink() as ipr:
            state = read_kernel_state(ipr) if names is None else read_links(ipr, names)
            yield NetlinkSession(ipr, state)

    def links(self) -> Mapping[str, LinkInfo]:
        with open_netlink() as ipr:
            return read_kernel_state(ipr).links

    def ensure_sysctl(self, key: str, value: str) -> list[str]:
        return sysctl.ensure_sysctl(key, value)
