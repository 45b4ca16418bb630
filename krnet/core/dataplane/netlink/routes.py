"""IPv4 addresses on krnet's links and main-table routes, converged and read back."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

from krnet.core.dataplane.netlink.calls import call
from krnet.core.dataplane.netlink.state import MAIN_TABLE, KernelState, current_routes
from krnet.core.model.node_state import LinkInfo, RouteInfo
from krnet.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute


def converge_address(ipr: IPRoute, link: LinkInfo, interface: IPv4Interface) -> list[str]:
    """Exactly one IPv4 address on `link`: strays removed, the wanted one added."""
    wanted = interface.with_prefixlen
    strays = [IPv4Interface(cidr) for cidr in link.addresses if cidr != wanted]
    changes = [_edit_address(ipr, link, "del", stray) for stray in strays]
    if wanted not in link.addresses:
        changes.append(_edit_address(ipr, link, "add", interface))
    return changes


def _edit_address(ipr: IPRoute, link: LinkInfo, command: str, interface: IPv4Interface) -> str:
    """Add or delete one address of `link`; returns the change."""
    cidr = interface.with_prefixlen
    what, outcome = (
        (f"remove {cidr} from {link.name}", "removed")
        if command == "del"
        else (f"add {cidr} to {link.name}", "added")
    )
    address = {"address": str(interface.ip), "prefixlen": interface.network.prefixlen}
    call(what, ipr.addr, command, index=link.index, **address)
    return f"{link.name}: address {cidr} {outcome}"


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
    routes = [route for route in current_routes(ipr, state) if route.dst == target]
    if any(_route_matches(route, gateway, dev) for route in routes):
        return []
    wanted = _describe_route(target, gateway, dev)
    call(wanted, ipr.route, "replace", **_route_spec(state, dst, gateway, dev))
    state.routes_stale = True
    after = [route for route in current_routes(ipr, state) if route.dst == target]
    if not any(_route_matches(route, gateway, dev) for route in after):
        raise KernelError(f"{wanted}: not in the main table after adding it; check `ip route`")
    if not routes:
        return [f"{wanted}: added"]
    old = ", ".join(_describe_route(target, route.gateway, route.dev) for route in routes)
    return [f"{wanted}: replaced {old}"]


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
