"""A VTEP's peer entries: permanent neighbours, FDB entries and routes, converged, read back.

flannel's VXLAN backend is the model: per remote node a permanent neighbour (its VTEP
address -> its VTEP MAC), an FDB entry (that MAC -> its underlay address) and a route to its
subnet via its VTEP address `onlink`. krnet adds a /32 link route to each VTEP address that
stays while the pair is on the hub, so the direct path can still be probed and recover.
Everything on the VTEP that is not wanted is removed: the VTEP is krnet's alone. A pass reads
only the VTEP's entries (dumps the kernel filters, `rtnl`) and writes only the differences, in
batches; what it wrote is read back.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from krnet.core.dataplane.netlink import rtnl
from krnet.core.dataplane.netlink.rtnl import Request, Rtnl, attribute, attributes, open_rtnl
from krnet.core.dataplane.netlink.state import MAIN_TABLE, KernelState
from krnet.errors import KernelError

if TYPE_CHECKING:
    from krnet.core.dataplane.interfaces import PeerEntry

RTNH_F_ONLINK = 0x4
SCOPE_UNIVERSE, SCOPE_LINK = 0, 253
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


def read_entries(link: Rtnl, vtep: str, index: int) -> VtepEntries:
    """The VTEP's permanent neighbours, FDB entries and main-table routes, and nothing else."""
    return VtepEntries(
        _neighbours(link, vtep, index), _fdb(link, vtep, index), _routes(link, vtep, index)
    )


def ensure_peer_entries(state: KernelState, vtep: str, entries: Sequence[PeerEntry]) -> list[str]:
    """Exactly these peers' entries on `vtep` (neighbour, FDB, then route), read back."""
    index = _index(state, vtep)
    want = wanted_entries(entries)
    with open_rtnl() as link:
        have = read_entries(link, vtep, index)
        requests = _neighbour_requests(vtep, index, want, have)
        requests += _fdb_requests(vtep, index, want, have)
        requests += _route_requests(vtep, index, want, have)
        if not requests:
            return []
        link.apply(requests)
        state.routes_stale = True
        after = read_entries(link, vtep, index)
    if after != want:
        raise KernelError(
            f"{vtep}: peer entries read back as {after}, expected {want}; another program "
            "may be managing this link: stop it or rename krnet's link"
        )
    return [what for what, *_ in requests]


def _neighbours(link: Rtnl, vtep: str, index: int) -> dict[str, str]:
    found = {}
    request = rtnl.neighbour(socket.AF_INET, 0, 0, attribute(rtnl.NDA_IFINDEX, _u32(index)))
    for _, msg in link.dump(f"dump neighbours of {vtep}", rtnl.RTM_GETNEIGH, request):
        _, _, _, ifindex, nud, _, _ = rtnl.NDMSG.unpack_from(msg)
        attrs = attributes(msg, rtnl.NDMSG.size)
        if ifindex == index and nud & rtnl.NUD_PERMANENT and rtnl.NDA_DST in attrs:
            mac = rtnl.mac_text(attrs.get(rtnl.NDA_LLADDR, b""))
            found[socket.inet_ntoa(attrs[rtnl.NDA_DST])] = mac
    return found


def _fdb(link: Rtnl, vtep: str, index: int) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    request = rtnl.neighbour(rtnl.AF_BRIDGE, 0, 0, attribute(rtnl.NDA_IFINDEX, _u32(index)))
    for _, msg in link.dump(f"dump FDB of {vtep}", rtnl.RTM_GETNEIGH, request):
        attrs = attributes(msg, rtnl.NDMSG.size)
        if rtnl.NDMSG.unpack_from(msg)[3] == index and len(attrs.get(rtnl.NDA_DST, b"")) == 4:
            mac = rtnl.mac_text(attrs.get(rtnl.NDA_LLADDR, b""))
            remote = socket.inet_ntoa(attrs[rtnl.NDA_DST])
            found[mac] = tuple(sorted((*found.get(mac, ()), remote)))
    return found


def _routes(link: Rtnl, vtep: str, index: int) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    request = rtnl.route(0, 0, 0, 0, attribute(rtnl.RTA_OIF, _u32(index)))
    for _, msg in link.dump(f"dump routes of {vtep}", rtnl.RTM_GETROUTE, request):
        _, dst_len, _, _, table, _, _, kind, _ = rtnl.RTMSG.unpack_from(msg)
        attrs = attributes(msg, rtnl.RTMSG.size)
        table = int.from_bytes(attrs.get(rtnl.RTA_TABLE, b""), "little") or table
        oif = int.from_bytes(attrs.get(rtnl.RTA_OIF, b""), "little")
        if table != MAIN_TABLE or kind != rtnl.RTN_UNICAST or oif != index:
            continue
        dst = socket.inet_ntoa(attrs.get(rtnl.RTA_DST, bytes(4)))
        gateway = attrs.get(rtnl.RTA_GATEWAY)
        found[f"{dst}/{dst_len}"] = socket.inet_ntoa(gateway) if gateway else None
    return found


def _neighbour_requests(
    vtep: str, index: int, want: VtepEntries, have: VtepEntries
) -> list[Request]:
    requests: list[Request] = []
    for ip in sorted(set(have.neighbours) - set(want.neighbours)):
        body = rtnl.neighbour(
            socket.AF_INET, index, 0, attribute(rtnl.NDA_DST, socket.inet_aton(ip))
        )
        requests.append((f"{vtep}: neighbour {ip} removed", rtnl.RTM_DELNEIGH, 0, body))
    for ip, mac in sorted(want.neighbours.items()):
        if have.neighbours.get(ip) != mac:
            attrs = attribute(rtnl.NDA_DST, socket.inet_aton(ip)) + attribute(
                rtnl.NDA_LLADDR, _mac(mac)
            )
            body = rtnl.neighbour(socket.AF_INET, index, rtnl.NUD_PERMANENT, attrs)
            flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
            requests.append(
                (f"{vtep}: neighbour {ip} -> {mac} set", rtnl.RTM_NEWNEIGH, flags, body)
            )
    return requests


def _fdb_requests(vtep: str, index: int, want: VtepEntries, have: VtepEntries) -> list[Request]:
    requests: list[Request] = []
    for mac, remotes in sorted(have.fdb.items()):
        for remote in remotes if want.fdb.get(mac) != remotes else ():
            body = _fdb_body(index, mac, remote)
            requests.append((f"{vtep}: FDB {mac} -> {remote} removed", rtnl.RTM_DELNEIGH, 0, body))
    for mac, (remote,) in sorted(want.fdb.items()):
        if have.fdb.get(mac) != (remote,):
            flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_APPEND
            body = _fdb_body(index, mac, remote)
            requests.append(
                (f"{vtep}: FDB {mac} -> {remote} added", rtnl.RTM_NEWNEIGH, flags, body)
            )
    return requests


def _route_requests(vtep: str, index: int, want: VtepEntries, have: VtepEntries) -> list[Request]:
    requests: list[Request] = []
    for dst in sorted(set(have.routes) - set(want.routes)):
        body = _route_body(dst, None, index, SCOPE_ANY)
        requests.append((f"{vtep}: route {dst} removed", rtnl.RTM_DELROUTE, 0, body))
    for dst, gateway in sorted(want.routes.items()):
        if dst not in have.routes or have.routes[dst] != gateway:
            what = (
                f"{vtep}: route {dst} via {gateway} dev {vtep} onlink set"
                if gateway
                else f"{vtep}: route {dst} (link) set"
            )
            scope = SCOPE_UNIVERSE if gateway else SCOPE_LINK
            body = _route_body(dst, gateway, index, scope)
            flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
            requests.append((what, rtnl.RTM_NEWROUTE, flags, body))
    return requests


def _fdb_body(index: int, mac: str, remote: str) -> bytes:
    attrs = attribute(rtnl.NDA_LLADDR, _mac(mac)) + attribute(
        rtnl.NDA_DST, socket.inet_aton(remote)
    )
    return rtnl.neighbour(rtnl.AF_BRIDGE, index, rtnl.NUD_PERMANENT, attrs, rtnl.NTF_SELF)


def _route_body(dst: str, gateway: str | None, index: int, scope: int) -> bytes:
    network, _, length = dst.partition("/")
    attrs = attribute(rtnl.RTA_DST, socket.inet_aton(network)) + attribute(
        rtnl.RTA_OIF, _u32(index)
    )
    if gateway is not None:
        attrs += attribute(rtnl.RTA_GATEWAY, socket.inet_aton(gateway))
    flags = RTNH_F_ONLINK if gateway else 0
    protocol = 0 if scope == SCOPE_ANY else rtnl.RTPROT_STATIC  # a deletion matches any origin
    return rtnl.route(int(length), protocol, scope, flags, attrs)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _index(state: KernelState, vtep: str) -> int:
    link = state.links.get(vtep)
    if link is None:
        raise KernelError(f"{vtep} does not exist: create the VTEP before its peer entries")
    return link.index
