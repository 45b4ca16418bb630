"""krnet's links, addresses and routes through netlink: one dump per pass, idempotent ensures.

Every `ensure_*` converges one object on the wanted state, reads it back and returns what it
changed (empty when nothing did); a read-back that disagrees raises `KernelError` naming the link
and the value expected. pyroute2's sync `IPRoute` runs its own event loop, so it is used only
from threads, never inside a running asyncio loop. pyroute2 is imported here and nowhere else.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET
from typing import TYPE_CHECKING, Any

from krnet.core.model.node_state import LinkInfo, RouteInfo, VxlanInfo
from krnet.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

MAC_PREFIX = (0x02, 0x6B, 0x72)  # locally administered unicast, "kr"
MAIN_TABLE = 254
RTN_UNICAST = 1
IFF_UP = 0x1
NO_ADDRESS = "0.0.0.0"
HOST_DEVICE_KINDS = ("dummy", "bridge")  # bridge: kernels without the dummy driver


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


# -- reading --------------------------------------------------------------------------------


def read_kernel_state(ipr: IPRoute) -> KernelState:
    """One dump each of links, IPv4 addresses and main-table IPv4 routes, indexed by name."""
    messages = list(_call("dump links", ipr.link, "dump"))
    names = {msg["index"]: msg.get("ifname") for msg in messages}
    addresses = _addresses_by_index(_call("dump addresses", ipr.addr, "dump", family=AF_INET))
    links = {
        names[msg["index"]]: _link_info(msg, names, addresses.get(msg["index"], ()))
        for msg in messages
    }
    return KernelState(links=links, routes=_read_routes(ipr, names), names=names)


def read_links(ipr: IPRoute, names: Iterable[str]) -> KernelState:
    """Only the named links that exist (one `get` each) with their IPv4 addresses, and no
    routes: for work on a few links. A full dump grows with every tunnel (about 0.3 s at
    255 on a small machine): one per join made 255 joins cost over a minute of CPU."""
    messages = []
    for name in names:
        try:
            messages += ipr.link("get", ifname=name)
        except _refusals() as error:
            if _error_code(error) != errno.ENODEV:
                raise _kernel_error(f"read {name}", error) from error
    index_names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in messages}
    addresses = _addresses_by_index(_call("dump addresses", ipr.addr, "dump", family=AF_INET))
    links = {
        index_names[msg["index"]]: _link_info(msg, index_names, addresses.get(msg["index"], ()))
        for msg in messages
    }
    return KernelState(links=links, routes=(), names=index_names, routes_stale=True)


def _addresses_by_index(messages: Any) -> dict[int, tuple[str, ...]]:
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
    messages = _call("dump routes", ipr.route, "dump", family=AF_INET, table=MAIN_TABLE)
    routes = []
    for msg in messages:
        if msg.get_attr("RTA_TABLE") != MAIN_TABLE or msg["type"] != RTN_UNICAST:
            continue
        dst = f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}" if msg["dst_len"] else "default"
        oif = msg.get_attr("RTA_OIF")
        routes.append(RouteInfo(dst=dst, gateway=msg.get_attr("RTA_GATEWAY"), dev=names.get(oif)))
    return tuple(routes)


def _refresh(ipr: IPRoute, state: KernelState, name: str) -> LinkInfo:
    """Read one link back (not the whole table) and record it in the state."""
    msg = _call(f"read back {name}", ipr.link, "get", ifname=name)[0]
    addresses = _addresses_by_index(
        _call(f"read addresses of {name}", ipr.addr, "dump", index=msg["index"], family=AF_INET)
    )
    link = _link_info(msg, state.names, addresses.get(msg["index"], ()))
    state.put(link)
    return link


def _current_routes(ipr: IPRoute, state: KernelState) -> tuple[RouteInfo, ...]:
    if state.routes_stale:
        state.routes = _read_routes(ipr, state.names)
        state.routes_stale = False
    return state.routes


# -- links ----------------------------------------------------------------------------------


def ensure_host_device(
    ipr: IPRoute, state: KernelState, name: str, interface: IPv4Interface, mtu: int | None = None
) -> list[str]:
    """The host's overlay address on a dummy link, or a port-less bridge without the driver."""
    changes: list[str] = []
    link = state.links.get(name)
    if link is not None and link.kind not in HOST_DEVICE_KINDS:
        changes += _delete(ipr, state, name, f"{_identity(link)}, not dummy: deleted")
        link = None
    if link is None:
        kind = _create_host_device(ipr, name, mtu)
        _refresh(ipr, state, name)
        changes.append(f"{name}: created ({kind})")
    changes += _converge(ipr, state, name, mtu=mtu, interface=interface)
    _verify(state.links[name], mtu=mtu, interface=interface)
    return changes


def _create_host_device(ipr: IPRoute, name: str, mtu: int | None) -> str:
    sizing = {} if mtu is None else {"mtu": mtu}
    try:
        ipr.link("add", ifname=name, kind="dummy", **sizing)
    except _refusals() as error:
        if _error_code(error) != errno.EOPNOTSUPP:
            raise _kernel_error(f"create {name} (dummy)", error) from error
        _call(f"create {name} (bridge)", ipr.link, "add", ifname=name, kind="bridge", **sizing)
        return "bridge: this kernel has no dummy driver"
    return "dummy"


def ensure_bridge(
    ipr: IPRoute, state: KernelState, name: str, *, interface: IPv4Interface, mtu: int, mac: str
) -> list[str]:
    """The runner's bridge with its MAC pinned, so a recreated port does not change it."""
    changes: list[str] = []
    link = state.links.get(name)
    if link is not None and link.kind != "bridge":
        changes += _delete(ipr, state, name, f"{_identity(link)}, not a bridge: deleted")
        link = None
    if link is None:
        # No MTU here: only a later `set` pins it; a bridge created with one follows its ports
        # and falls back to 1500 when vxlan0 is recreated.
        _call(f"create bridge {name}", ipr.link, "add", ifname=name, kind="bridge", address=mac)
        _refresh(ipr, state, name)
        changes.append(f"{name}: created (bridge, MAC {mac})")
    changes += _converge(ipr, state, name, mtu=mtu, mac=mac, interface=interface)
    _verify(state.links[name], mtu=mtu, mac=mac, interface=interface)
    return changes


def ensure_vxlan(
    ipr: IPRoute,
    state: KernelState,
    name: str,
    *,
    vni: int,
    local: str | None,
    remote: str,
    port: int,
    mtu: int,
    address: IPv4Interface | None = None,
    master: str | None = None,
    mac: str | None = None,
) -> list[str]:
    """A point-to-point VXLAN link (learning off); local None leaves the source to the kernel."""
    changes: list[str] = []
    want = VxlanInfo(vni=vni, local=local, remote=remote, port=port, learning=False)
    link = state.links.get(name)
    if link is not None and (
        link.vxlan is None or (link.vxlan.vni, link.vxlan.port) != (vni, port)
    ):
        mac = mac or link.mac
        changes += _delete(
            ipr, state, name, f"{_identity(link)}, wanted VNI {vni} port {port}: deleted"
        )
        link = None
    if link is None:
        _create_vxlan(ipr, name, want, mtu, mac)
        link = _refresh(ipr, state, name)
        changes.append(f"{name}: created (VNI {vni}, {_endpoints(want)}, port {port})")
    changes += _retarget(ipr, state, link, want)
    changes += _converge(ipr, state, name, mtu=mtu, mac=mac, master=master, interface=address)
    _verify(state.links[name], mtu=mtu, mac=mac, master=master, interface=address, vxlan=want)
    return changes


def _create_vxlan(ipr: IPRoute, name: str, want: VxlanInfo, mtu: int, mac: str | None) -> None:
    spec: dict[str, Any] = {
        "ifname": name,
        "kind": "vxlan",
        "vxlan_id": want.vni,
        "vxlan_group": want.remote,
        "vxlan_port": want.port,
        "vxlan_learning": 0,
        "mtu": mtu,
    }
    if want.local:
        spec["vxlan_local"] = want.local
    if mac:
        spec["address"] = mac
    _call(f"create {name} (VNI {want.vni}, port {want.port})", ipr.link, "add", **spec)


def _retarget(ipr: IPRoute, state: KernelState, link: LinkInfo, want: VxlanInfo) -> list[str]:
    """Change remote, local and learning in place (the kernel refuses that for VNI and port)."""
    have = link.vxlan or want
    update: dict[str, Any] = {}
    changes = []
    if have.remote != want.remote:
        update["vxlan_group"] = want.remote
        changes.append(f"{link.name}: remote {have.remote} -> {want.remote}")
    if have.local != want.local:
        update["vxlan_local"] = want.local or NO_ADDRESS
        changes.append(f"{link.name}: local {have.local or 'any'} -> {want.local or 'any'}")
    if have.learning:
        update["vxlan_learning"] = 0
        changes.append(f"{link.name}: learning off")
    if update:
        _call(f"update {link.name}", ipr.link, "set", index=link.index, kind="vxlan", **update)
        _refresh(ipr, state, link.name)
    return changes


def _converge(
    ipr: IPRoute,
    state: KernelState,
    name: str,
    *,
    mtu: int | None = None,
    mac: str | None = None,
    master: str | None = None,
    interface: IPv4Interface | None = None,
) -> list[str]:
    """MTU, MAC, master, admin state up and (when given) exactly one IPv4 address."""
    link = state.links[name]
    update: dict[str, Any] = {}
    changes = []
    if mtu is not None and link.mtu != mtu:
        update["mtu"] = mtu
        changes.append(f"{name}: MTU {link.mtu} -> {mtu}")
    if mac is not None and link.mac != mac.lower():
        update["address"] = mac
        changes.append(f"{name}: MAC {link.mac} -> {mac}")
    if master is not None and link.master != master:
        if master not in state.links:
            raise KernelError(f"{name}: master {master} does not exist; create it first")
        update["master"] = state.links[master].index
        changes.append(f"{name}: enslaved to {master}")
    if not link.up:
        update["state"] = "up"
        changes.append(f"{name}: up")
    if update:
        _call(f"set {name}", ipr.link, "set", index=link.index, **update)
    if interface is not None:
        changes += _converge_address(ipr, link, interface)
    if changes:
        _refresh(ipr, state, name)
    return changes


def _converge_address(ipr: IPRoute, link: LinkInfo, interface: IPv4Interface) -> list[str]:
    wanted = interface.with_prefixlen
    changes = []
    for cidr in link.addresses:
        if cidr != wanted:
            stray = IPv4Interface(cidr)
            _call(
                f"remove {cidr} from {link.name}",
                ipr.addr,
                "del",
                index=link.index,
                address=str(stray.ip),
                prefixlen=stray.network.prefixlen,
            )
            changes.append(f"{link.name}: address {cidr} removed")
    if wanted not in link.addresses:
        _call(
            f"add {wanted} to {link.name}",
            ipr.addr,
            "add",
            index=link.index,
            address=str(interface.ip),
            prefixlen=interface.network.prefixlen,
        )
        changes.append(f"{link.name}: address {wanted} added")
    return changes


def _verify(
    link: LinkInfo,
    *,
    mtu: int | None = None,
    mac: str | None = None,
    master: str | None = None,
    interface: IPv4Interface | None = None,
    vxlan: VxlanInfo | None = None,
) -> None:
    """Compare a read-back link with what was asked; the first difference is an error."""
    expected: list[tuple[str, object, object]] = [("state", "up", "up" if link.up else "down")]
    if mtu is not None:
        expected.append(("MTU", mtu, link.mtu))
    if mac is not None:
        expected.append(("MAC", mac.lower(), link.mac))
    if master is not None:
        expected.append(("master", master, link.master))
    if interface is not None:
        expected.append(("addresses", (interface.with_prefixlen,), link.addresses))
    if vxlan is not None:
        expected.append(("VXLAN attributes", vxlan, link.vxlan))
    for what, want, have in expected:
        if want != have:
            raise KernelError(
                f"{link.name}: {what} reads back as {have}, expected {want}; "
                "another program may be managing this link: stop it or rename krnet's link"
            )


def remove_link(ipr: IPRoute, state: KernelState, name: str) -> list[str]:
    """Delete a link if it exists (its addresses and routes go with it)."""
    if name not in state.links:
        return []
    return _delete(ipr, state, name, "removed")


def _delete(ipr: IPRoute, state: KernelState, name: str, outcome: str) -> list[str]:
    """Delete a link, check it is gone, and report `outcome`."""
    _call(f"delete {name}", ipr.link, "del", index=state.links[name].index)
    state.forget(name)
    try:
        ipr.link("get", ifname=name)
    except _refusals() as error:
        if _error_code(error) == errno.ENODEV:
            return [f"{name}: {outcome}"]
        raise _kernel_error(f"read back {name}", error) from error
    raise KernelError(
        f"{name}: still present after deletion; remove it by hand: ip link del {name}"
    )


def _identity(link: LinkInfo) -> str:
    if link.vxlan is None:
        return f"kind {link.kind or 'plain'}"
    return f"VNI {link.vxlan.vni} port {link.vxlan.port}"


def _endpoints(vxlan: VxlanInfo) -> str:
    return f"local {vxlan.local or 'any'}, remote {vxlan.remote}"


# -- routes ---------------------------------------------------------------------------------


def ensure_route(
    ipr: IPRoute,
    state: KernelState,
    dst: IPv4Network,
    *,
    via: IPv4Address | None = None,
    dev: str | None = None,
) -> list[str]:
    """A main-table route to dst via a gateway and/or out of a device, replacing a wrong one."""
    target = _route_dst(dst)
    gateway = str(via) if via is not None else None
    routes = [route for route in _current_routes(ipr, state) if route.dst == target]
    if any(_route_matches(route, gateway, dev) for route in routes):
        return []
    wanted = _describe_route(target, gateway, dev)
    _call(wanted, ipr.route, "replace", **_route_spec(state, dst, gateway, dev))
    state.routes_stale = True
    after = [route for route in _current_routes(ipr, state) if route.dst == target]
    if not any(_route_matches(route, gateway, dev) for route in after):
        raise KernelError(f"{wanted}: not in the main table after adding it; check `ip route`")
    if not routes:
        return [f"{wanted}: added"]
    old = ", ".join(_describe_route(target, route.gateway, route.dev) for route in routes)
    return [f"{wanted}: replaced {old}"]


def remove_route(
    ipr: IPRoute,
    state: KernelState,
    dst: IPv4Network,
    *,
    via: IPv4Address | None = None,
    dev: str | None = None,
) -> list[str]:
    """Delete the main-table routes to dst matching via/dev (all of them when neither is given)."""
    target = _route_dst(dst)
    gateway = str(via) if via is not None else None
    doomed = [
        route
        for route in _current_routes(ipr, state)
        if route.dst == target and _route_matches(route, gateway, dev)
    ]
    changes = []
    for route in doomed:
        description = _describe_route(target, route.gateway, route.dev)
        spec = _route_spec(state, dst, route.gateway, route.dev)
        _call(f"delete {description}", ipr.route, "del", **spec)
        changes.append(f"{description}: removed")
    if changes:
        state.routes_stale = True
    return changes


def _route_spec(
    state: KernelState, dst: IPv4Network, gateway: str | None, dev: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"dst": str(dst), "table": MAIN_TABLE}
    if gateway is not None:
        spec["gateway"] = gateway
    if dev is not None:
        if dev not in state.links:
            raise KernelError(f"route {dst}: device {dev} does not exist; create it first")
        spec["oif"] = state.links[dev].index
    return spec


def _route_dst(dst: IPv4Network) -> str:
    return "default" if dst.prefixlen == 0 else dst.with_prefixlen


def _route_matches(route: RouteInfo, gateway: str | None, dev: str | None) -> bool:
    return (gateway is None or route.gateway == gateway) and (dev is None or route.dev == dev)


def _describe_route(dst: str, gateway: str | None, dev: str | None) -> str:
    parts = [f"route {dst}"]
    if gateway:
        parts.append(f"via {gateway}")
    if dev:
        parts.append(f"dev {dev}")
    return " ".join(parts)


# -- errors ---------------------------------------------------------------------------------


def _call(what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one netlink request; a refusal becomes a KernelError that says what was tried."""
    try:
        return method(*args, **kwargs)
    except _refusals() as error:
        raise _kernel_error(what, error) from error


def _refusals() -> tuple[type[Exception], ...]:
    from pyroute2.netlink.exceptions import NetlinkError

    return (NetlinkError, OSError)


def _error_code(error: Exception) -> int | None:
    code = getattr(error, "code", None) or getattr(error, "errno", None)
    return code if isinstance(code, int) else None


def _kernel_error(what: str, error: Exception) -> KernelError:
    code = _error_code(error)
    detail = f"{errno.errorcode.get(code, code)} {error}" if code else str(error)
    hint = {
        errno.EPERM: "run krnet as root (it needs CAP_NET_ADMIN)",
        errno.EEXIST: "another link already holds this name, VNI/port or address: "
        "find it with `ip -d link` and remove it",
        errno.EOPNOTSUPP: "this kernel lacks the driver or the change: check `modprobe vxlan`",
    }.get(code, "check `ip -d link` and the kernel log (`dmesg`)")
    return KernelError(f"cannot {what}: {detail}; {hint}")
