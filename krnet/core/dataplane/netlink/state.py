"""Reading the kernel: one dump of links, addresses and routes per pass, indexed by name.

pyroute2's sync `IPRoute` runs its own event loop, so it is used only from threads, never
inside a running asyncio loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socket import AF_INET
from typing import TYPE_CHECKING, Any

from krnet.core.dataplane.netlink.calls import call
from krnet.core.model.node_state import LinkInfo, RouteInfo, VxlanInfo
from krnet.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

MAC_PREFIX = (0x02, 0x6B, 0x72)  # locally administered unicast, "kr"
MAIN_TABLE = 254
RTN_UNICAST = 1
IFF_UP = 0x1
NO_ADDRESS = "0.0.0.0"


@contextmanager
def open_netlink(netns: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket in the current network namespace, or in the named one under /run/netns."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("open_netlink() blocks: call it from a thread, not the asyncio loop")
    from pyroute2 import IPRoute

    try:
        ipr = IPRoute() if netns is None else IPRoute(netns=netns, flags=0)
    except OSError as error:
        where = f"network namespace {netns}" if netns else "this network namespace"
        raise KernelError(f"cannot open netlink in {where}: {error}; run krnet as root") from error
    try:
        yield ipr
    finally:
        ipr.close()


@dataclass
class KernelState:
    """Links (by name) and main-table IPv4 routes from one dump, kept current by the ensures."""

    links: dict[str, LinkInfo]
    routes: tuple[RouteInfo, ...]
    names: dict[int, str] = field(default_factory=dict)  # ifindex -> name
    routes_stale: bool = False  # a link or address changed: the kernel rewrote routes

    def put(self, link: LinkInfo) -> None:
        """Record a link read back after a change."""
        self.forget(link.name)
        self.links[link.name] = link
        self.names[link.index] = link.name
        self.routes_stale = True

    def forget(self, name: str) -> None:
        """Drop a link that is gone (its routes went with it)."""
        old = self.links.pop(name, None)
        if old is not None:
            self.names.pop(old.index, None)
            self.routes_stale = True


def stable_mac(role: str, vni: int) -> str:
    """A locally administered MAC that survives recreation: neighbours' ARP entries stay right."""
    digest = hashlib.sha256(f"{role}:{vni}".encode()).digest()
    return ":".join(f"{byte:02x}" for byte in (*MAC_PREFIX, *digest[:3]))


def read_kernel_state(ipr: IPRoute) -> KernelState:
    """One dump each of links, IPv4 addresses and main-table IPv4 routes, indexed by name."""
    messages = list(call("dump links", ipr.link, "dump"))
    names = {msg["index"]: msg.get("ifname") for msg in messages}
    addresses = _addresses_by_index(call("dump addresses", ipr.addr, "dump", family=AF_INET))
    links = {
        names[msg["index"]]: _link_info(msg, names, addresses.get(msg["index"], ()))
        for msg in messages
    }
    return KernelState(links=links, routes=_read_routes(ipr, names), names=names)


def refresh(ipr: IPRoute, state: KernelState, name: str) -> LinkInfo:
    """Read one link back (not the whole table) and record it in the state."""
    msg = call(f"read back {name}", ipr.link, "get", ifname=name)[0]
    addresses = _addresses_by_index(
        call(f"read addresses of {name}", ipr.addr, "dump", index=msg["index"], family=AF_INET)
    )
    link = _link_info(msg, state.names, addresses.get(msg["index"], ()))
    state.put(link)
    return link


def current_routes(ipr: IPRoute, state: KernelState) -> tuple[RouteInfo, ...]:
    """The main table's routes, read again only when a change may have rewritten them."""
    if state.routes_stale:
        state.routes = _read_routes(ipr, state.names)
        state.routes_stale = False
    return state.routes


def _addresses_by_index(messages: Iterable[Any]) -> dict[int, tuple[str, ...]]:
    found: dict[int, list[str]] = {}
    for msg in messages:
        found.setdefault(msg["index"], []).append(f"{msg.get('address')}/{msg['prefixlen']}")
    return {index: tuple(cidrs) for index, cidrs in found.items()}


def _link_info(msg: Any, names: dict[int, str], addresses: tuple[str, ...]) -> LinkInfo:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo is not None else None
    stats = msg.get_attr("IFLA_STATS64") or {}
    master = msg.get_attr("IFLA_MASTER")
    mac = msg.get_attr("IFLA_ADDRESS")
    return LinkInfo(
        name=msg.get_attr("IFLA_IFNAME"),
        index=msg["index"],
        kind=kind,
        mtu=msg.get_attr("IFLA_MTU"),
        up=bool(msg["flags"] & IFF_UP),
        mac=mac.lower() if mac else None,
        master=names.get(master) if master else None,
        addresses=addresses,
        vxlan=_vxlan_info(data) if kind == "vxlan" and data is not None else None,
        rx_bytes=stats.get("rx_bytes", 0),
        tx_bytes=stats.get("tx_bytes", 0),
        rx_packets=stats.get("rx_packets", 0),
        tx_packets=stats.get("tx_packets", 0),
    )


def _vxlan_info(data: Any) -> VxlanInfo:
    local = data.get_attr("IFLA_VXLAN_LOCAL")
    remote = data.get_attr("IFLA_VXLAN_GROUP")
    return VxlanInfo(
        vni=data.get_attr("IFLA_VXLAN_ID"),
        local=local if local and local != NO_ADDRESS else None,
        remote=remote if remote and remote != NO_ADDRESS else None,
        port=data.get_attr("IFLA_VXLAN_PORT"),
        learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
    )


def _read_routes(ipr: IPRoute, names: dict[int, str]) -> tuple[RouteInfo, ...]:
    messages = call("dump routes", ipr.route, "dump", family=AF_INET, table=MAIN_TABLE)
    routes = []
    for msg in messages:
        if msg.get_attr("RTA_TABLE") != MAIN_TABLE or msg["type"] != RTN_UNICAST:
            continue
        dst = f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}" if msg["dst_len"] else "default"
        oif = msg.get_attr("RTA_OIF")
        routes.append(RouteInfo(dst=dst, gateway=msg.get_attr("RTA_GATEWAY"), dev=names.get(oif)))
    return tuple(routes)
