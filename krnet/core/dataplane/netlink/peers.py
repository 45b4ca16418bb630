"""A VTEP's peer entries: permanent neighbours, FDB entries and routes, converged, read back.

flannel's VXLAN backend is the model: per remote node a permanent neighbour (its VTEP
address -> its VTEP MAC), an FDB entry (that MAC -> its underlay address) and a route to its
subnet via its VTEP address `onlink`. krnet adds a /32 link route to each VTEP address that
stays while the pair is on the hub, so the direct path can still be probed and recover.
Everything on the VTEP that is not wanted is removed: the VTEP is krnet's alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from socket import AF_INET
from typing import TYPE_CHECKING, Any

from krnet.core.dataplane.netlink.calls import call
from krnet.core.dataplane.netlink.state import MAIN_TABLE, KernelState, current_routes
from krnet.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from krnet.core.dataplane.interfaces import PeerEntry

NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x4
SCOPE_LINK = 253
SCOPE_ANY = 255  # RT_SCOPE_NOWHERE: a deletion that matches a route of any scope


@dataclass(frozen=True)
class VtepEntries:
    """What a VTEP holds, as read back: neighbours (IP -> MAC), FDB (MAC -> underlay IPs), routes
    (destination -> gateway, None for a link route)."""

    neighbours: dict[str, str]
    fdb: dict[str, tuple[str, ...]]
    routes: dict[str, str | None]


def wanted_entries(entries: Sequence[PeerEntry]) -> VtepEntries:
    """The neighbours, FDB entries and routes these peers ask for."""
    routes: dict[str, str | None] = {f"{e.vtep_ip}/32": None for e in entries}
    routes.update({e.subnet: e.vtep_ip for e in entries if e.direct})
    return VtepEntries(
        neighbours={e.vtep_ip: e.mac for e in entries},
        fdb={e.mac: (e.physical_ip,) for e in entries},
        routes=routes,
    )


def read_entries(ipr: IPRoute, state: KernelState, vtep: str) -> VtepEntries:
    """The VTEP's permanent neighbours, FDB entries and main-table routes."""
    index = _index(state, vtep)
    neighbours = {
        msg.get_attr("NDA_DST"): (msg.get_attr("NDA_LLADDR") or "").lower()
        for msg in call(f"dump neighbours of {vtep}", ipr.neigh, "dump", family=AF_INET)
        if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT
    }
    fdb: dict[str, tuple[str, ...]] = {}
    for msg in call(f"dump FDB of {vtep}", ipr.fdb, "dump"):
        if msg["ifindex"] == index and msg.get_attr("NDA_DST"):
            mac = (msg.get_attr("NDA_LLADDR") or "").lower()
            fdb[mac] = tuple(sorted((*fdb.get(mac, ()), msg.get_attr("NDA_DST"))))
    routes = {r.dst: r.gateway for r in current_routes(ipr, state) if r.dev == vtep}
    return VtepEntries(neighbours, fdb, routes)


def ensure_peer_entries(
    ipr: IPRoute, state: KernelState, vtep: str, entries: Sequence[PeerEntry]
) -> list[str]:
    """Exactly these peers' entries on `vtep` (neighbour, FDB, then route), read back."""
    want, have = wanted_entries(entries), read_entries(ipr, state, vtep)
    index = _index(state, vtep)
    changes = _converge_neighbours(ipr, vtep, index, want, have)
    changes += _converge_fdb(ipr, vtep, index, want, have)
    changes += _converge_routes(ipr, state, vtep, index, want, have)
    if changes:
        state.routes_stale = True
        after = read_entries(ipr, state, vtep)
        if after != want:
            raise KernelError(
                f"{vtep}: peer entries read back as {after}, expected {want}; another program "
                "may be managing this link: stop it or rename krnet's link"
            )
    return changes


def _converge_neighbours(
    ipr: IPRoute, vtep: str, index: int, want: VtepEntries, have: VtepEntries
) -> list[str]:
    changes = []
    for ip in sorted(set(have.neighbours) - set(want.neighbours)):
        call(f"remove neighbour {ip} from {vtep}", ipr.neigh, "del", dst=ip, ifindex=index)
        changes.append(f"{vtep}: neighbour {ip} removed")
    for ip, mac in sorted(want.neighbours.items()):
        if have.neighbours.get(ip) != mac:
            spec = {"dst": ip, "lladdr": mac, "ifindex": index, "state": NUD_PERMANENT}
            call(f"set neighbour {ip} on {vtep}", ipr.neigh, "replace", **spec)
            changes.append(f"{vtep}: neighbour {ip} -> {mac} set")
    return changes


def _converge_fdb(
    ipr: IPRoute, vtep: str, index: int, want: VtepEntries, have: VtepEntries
) -> list[str]:
    changes = []
    for mac, remotes in sorted(have.fdb.items()):
        for remote in remotes if want.fdb.get(mac) != remotes else ():
            spec = {"lladdr": mac, "dst": remote, "ifindex": index}
            call(f"remove FDB {mac} -> {remote} from {vtep}", ipr.fdb, "del", **spec)
            changes.append(f"{vtep}: FDB {mac} -> {remote} removed")
    for mac, (remote,) in sorted(want.fdb.items()):
        if have.fdb.get(mac) != (remote,):
            spec = {"lladdr": mac, "dst": remote, "ifindex": index}
            call(f"add FDB {mac} -> {remote} on {vtep}", ipr.fdb, "append", **spec)
            changes.append(f"{vtep}: FDB {mac} -> {remote} added")
    return changes


def _converge_routes(
    ipr: IPRoute, state: KernelState, vtep: str, index: int, want: VtepEntries, have: VtepEntries
) -> list[str]:
    changes = []
    for dst in sorted(set(have.routes) - set(want.routes)):
        spec = {"dst": dst, "oif": index, "table": MAIN_TABLE, "scope": SCOPE_ANY}
        call(f"remove route {dst} dev {vtep}", ipr.route, "del", **spec)
        changes.append(f"{vtep}: route {dst} removed")
    for dst, gateway in sorted(want.routes.items()):
        if dst not in have.routes or have.routes[dst] != gateway:
            what = f"route {dst} via {gateway} dev {vtep} onlink" if gateway else f"route {dst}"
            call(what, ipr.route, "replace", **_route(dst, gateway, index))
            changes.append(f"{vtep}: {what} set" if gateway else f"{vtep}: {what} (link) set")
    state.routes_stale = state.routes_stale or bool(changes)
    return changes


def _route(dst: str, gateway: str | None, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"dst": dst, "oif": index, "table": MAIN_TABLE}
    if gateway is None:
        spec["scope"] = SCOPE_LINK
    else:
        spec.update(gateway=gateway, flags=RTNH_F_ONLINK)
    return spec


def _index(state: KernelState, vtep: str) -> int:
    link = state.links.get(vtep)
    if link is None:
        raise KernelError(f"{vtep} does not exist: create the VTEP before its peer entries")
    return link.index
