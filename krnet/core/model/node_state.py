"""What a node's kernel, firewall and Docker look like when read back: plain frozen values.

The data plane returns these from its reads (netlink, iptables-save, the Docker API, probes);
observe gathers them into a `NodeSnapshot`; diagnosis, status and the TUI read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class VxlanInfo:
    """The VXLAN attributes of a link as the kernel reports them."""

    vni: int
    local: str | None
    remote: str | None
    port: int
    learning: bool


@dataclass(frozen=True)
class LinkInfo:
    """One network link: identity, state, addresses and counters."""

    name: str
    index: int
    kind: str | None  # "vxlan", "bridge", "veth", ... (None for a plain device)
    mtu: int
    up: bool
    mac: str | None
    master: str | None
    addresses: tuple[str, ...] = ()  # CIDR strings, e.g. "10.1.0.1/16"
    vxlan: VxlanInfo | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0


@dataclass(frozen=True)
class RouteInfo:
    """An IPv4 route of the main table."""

    dst: str  # "10.0.0.0/8", or "default"
    gateway: str | None
    dev: str | None


@dataclass(frozen=True)
class RuleInfo:
    """An iptables rule as read back, with its counters."""

    table: str  # "filter" | "nat"
    chain: str
    spec: str  # the rule's arguments as iptables-save prints them, e.g. "-s 10.0.0.0/8 -j ACCEPT"
    packets: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class DockerNetworkInfo:
    """A Docker network krnet cares about."""

    name: str
    driver: str
    subnet: str | None
    gateway: str | None
    bridge: str | None  # com.docker.network.bridge.name
    mtu: int | None
    aux_addresses: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DockerState:
    """Whether Docker answers, and its networks when it does."""

    available: bool
    error: str | None = None
    networks: tuple[DockerNetworkInfo, ...] = ()
    selected_network: str | None = None  # the network containers should use (reference table)


@dataclass(frozen=True)
class ProbeResult:
    """The hub's DF probe through one runner's tunnel at the full overlay MTU."""

    runner_id: int
    sent: int
    received: int
    rtt_ms: float | None
    last_success: datetime | None
    # the same probe with a small payload: tells an MTU black hole from a blocked port
    small_sent: int = 0
    small_received: int = 0

    @property
    def loss(self) -> float:
        return 0.0 if self.sent == 0 else 1.0 - self.received / self.sent

    @property
    def small_loss(self) -> float:
        return 0.0 if self.small_sent == 0 else 1.0 - self.small_received / self.small_sent
