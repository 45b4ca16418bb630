"""What a runner accepts from its host: an allocation checked against its own view of the world.

A MAC proves only that the sender holds the cluster token (or, once enrolled, this runner's
key). Every member holds the token, so a runner checks the allocation of an enrolment's
`welcome`, and every later one, before it configures anything (docs/security.md): the overlay
network must be private, contain the runner's subnet, and leave its underlay alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from krnet.errors import ProtocolError

PRIVATE_NETWORKS = tuple(
    IPv4Network(text) for text in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)


@dataclass(frozen=True)
class Route:
    """One IPv4 route of the runner's own routing table (the underlay, as the runner sees it)."""

    network: IPv4Network
    device: str
    gateway: IPv4Address | None = None


def check_allocation(
    *,
    overlay_cidr: str,
    subnet: str,
    gateway: str,
    host_ip_on_subnet: str,
    physical_ips: Sequence[str],
    routes: Sequence[Route],
    own_devices: Sequence[str],
    own_networks: Sequence[str] = (),
) -> None:
    """Refuse (ProtocolError) an allocation this runner must not configure.

    `routes` are the runner's routes; those on `own_devices` (its bridge and `vxlan0`: the
    overlay itself, from an earlier welcome) and to `own_networks` (the fallback Docker network
    krnet made itself; its overlap with the overlay is a warning of its own) are not underlay.
    `physical_ips` are the tunnel's two ends, which must stay outside the overlay.
    """
    overlay, block = IPv4Network(overlay_cidr), IPv4Network(subnet)
    problems: list[str] = []
    if not any(overlay.subnet_of(private) for private in PRIVATE_NETWORKS):
        names = ", ".join(str(network) for network in PRIVATE_NETWORKS)
        problems.append(f"overlay_cidr {overlay} is not inside a private network ({names})")
    if not block.subnet_of(overlay) or block.prefixlen <= overlay.prefixlen:
        problems.append(f"subnet {block} is not a block inside overlay_cidr {overlay}")
    for name, address in (("gateway", gateway), ("host_ip_on_subnet", host_ip_on_subnet)):
        if IPv4Address(address) not in block:
            problems.append(f"{name} {address} is not in subnet {block}")
    for address in physical_ips:
        if IPv4Address(address) in overlay:
            problems.append(f"tunnel end {address} is inside overlay_cidr {overlay}")
    for route in routes:
        if route.device in own_devices or str(route.network) in own_networks:
            continue
        if route.network.prefixlen == 0:
            if route.gateway is not None and route.gateway in overlay:
                problems.append(
                    f"overlay_cidr {overlay} holds the default route's gateway {route.gateway} "
                    f"(dev {route.device})"
                )
        elif route.network.overlaps(overlay):
            problems.append(
                f"overlay_cidr {overlay} overlaps this runner's network {route.network} "
                f"(dev {route.device})"
            )
    if problems:
        raise ProtocolError(
            "bad_request",
            "refused the host's allocation, nothing configured: "
            + "; ".join(problems)
            + ". A host of this cluster sends its overlay_host_ip/overlay_host_prefix network: "
            "if this is your host, make that network private and apart from the runners' "
            "underlay; otherwise something on the underlay answers for the host",
        )
