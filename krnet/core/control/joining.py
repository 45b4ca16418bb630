"""What a runner says about itself in its `join`: the agent and `krnet cleanup` both send it."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING

from krnet.core.model.records import JoinRequest
from krnet.errors import ConfigError

if TYPE_CHECKING:
    from krnet.core.model.settings import Settings


def join_request(
    settings: Settings, identity: str, local_address: str, hostname: str | None = None
) -> JoinRequest:
    """What this runner says about itself when it joins (its `join` message is made of it)."""
    return JoinRequest(
        identity=identity,
        hostname=hostname or socket.gethostname(),
        physical_ip=settings.runner_address or ipv4_or_fail(local_address),
        vxlan_id=settings.overlay_vxlan_id,
        vxlan_port=settings.overlay_vxlan_port,
        mtu=settings.overlay_mtu,
    )


def ipv4_or_fail(address: str) -> str:
    """The IPv4 address a connection to the host has here (IPv4-mapped IPv6 unwrapped)."""
    parsed = ip_address(address)
    mapped = getattr(parsed, "ipv4_mapped", None)
    if isinstance(parsed, IPv4Address) or mapped is not None:
        return str(mapped or parsed)
    raise ConfigError(
        f"this runner reaches the host over IPv6 ({address}); the VXLAN underlay is IPv4: "
        "set runner_address to this runner's IPv4 address, or host_address to the host's"
    )
