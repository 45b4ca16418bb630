"""This node's IPv4 routing table as the kernel lists it in /proc/net/route (read only).

Read without netlink, so the runner agent can check a welcome against its underlay before any
data plane runs, in the network namespace it runs in.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from krnet.core.model.welcome import Route
from krnet.errors import KernelError

ROUTE_TABLE = Path("/proc/net/route")


def ipv4_routes(path: Path = ROUTE_TABLE) -> list[Route]:
    """Every IPv4 route of the main table: network, device and gateway (None when direct)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()[1:]
    except (OSError, UnicodeDecodeError) as exc:
        raise KernelError(f"cannot read the routing table {path}: {exc}") from None
    routes = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        device, destination, gateway, mask = fields[0], fields[1], fields[2], fields[7]
        network = IPv4Network(f"{_address(destination)}/{_address(mask)}", strict=False)
        via = _address(gateway)
        routes.append(Route(network, device, None if via == IPv4Address(0) else via))
    return routes


def _address(native_hex: str) -> IPv4Address:
    return IPv4Address(socket.inet_ntoa(struct.pack("=I", int(native_hex, 16))))
