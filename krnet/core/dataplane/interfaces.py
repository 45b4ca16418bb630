"""What the planes are built from, as interfaces: the kernel, the firewall, Docker, the prober
and where their events go, and the allocation fields the runner plane reads.

The control layer hands the real ones in (`krnet.core.control.planes`); unit tests hand in
small fakes, so the planes' decisions are tested without root and the kernel's behaviour is
proven by the lab tests of the real handles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Protocol, TypedDict

from krnet.core.dataplane.dockernet import NetworkSpec, OverlayAllocation

if TYPE_CHECKING:
    from typing_extensions import Required, Unpack  # typing has them from 3.11

    from krnet.core.dataplane.firewall import FirewallPlan
    from krnet.core.dataplane.probe import ProbeOutcome, ProbeTarget
    from krnet.core.model.node_state import LinkInfo
    from krnet.errors import KrnetError


class VxlanSpec(TypedDict, total=False):
    """A point-to-point VXLAN link as `ensure_vxlan` builds it (local None: the kernel picks)."""

    vni: Required[int]
    local: Required[str | None]
    remote: Required[str | None]  # None: a VTEP, its far ends are FDB entries
    port: Required[int]
    mtu: Required[int]
    address: IPv4Interface | None
    master: str | None
    mac: str | None


@dataclass(frozen=True)
class PeerEntry:
    """One direct peer's entries on the VTEP: its neighbour, FDB entry and routes."""

    vtep_ip: str  # its VTEP address: neighbour and /32 link route, gateway of its subnet
    mac: str  # its VTEP MAC
    physical_ip: str  # where the FDB sends that MAC
    subnet: str  # routed via vtep_ip onlink while `direct`
    direct: bool  # False: the pair is on the hub, its subnet route is withdrawn


class LinkSession(Protocol):
    """One pass over the kernel's links, read once and indexed by name, converged one by one.

    Every `ensure_*` is idempotent, reads back and returns what it changed.
    """

    @property
    def links(self) -> Mapping[str, LinkInfo]:
        """The links as read (and as changed since) in this pass."""
        ...

    def ensure_host_device(self, name: str, interface: IPv4Interface) -> list[str]: ...

    def ensure_bridge(
        self, name: str, *, interface: IPv4Interface, mtu: int, mac: str
    ) -> list[str]: ...

    def ensure_vxlan(self, name: str, **spec: Unpack[VxlanSpec]) -> list[str]: ...

    def ensure_tunnels(self, specs: Mapping[str, VxlanSpec]) -> dict[str, list[str] | KrnetError]:
        """Many tunnels in one pass (new ones in one batch): each name's changes or error."""
        ...

    def ensure_route(
        self, dst: IPv4Network, *, via: IPv4Address | None = None, dev: str | None = None
    ) -> list[str]: ...

    def ensure_peer_entries(self, vtep: str, entries: Sequence[PeerEntry]) -> list[str]: ...

    def remove_link(self, name: str) -> list[str]: ...


class Kernel(Protocol):
    """This node's kernel: netlink passes and /proc/sys parameters."""

    def session(self, names: Iterable[str] | None = None) -> AbstractContextManager[LinkSession]:
        """A pass over the named links (None: every link, and the main table's routes)."""
        ...

    def links(self) -> Mapping[str, LinkInfo]:
        """Every link as it is now, from one dump."""
        ...

    def ensure_sysctl(self, key: str, value: str) -> list[str]: ...


class Firewall(Protocol):
    """This node's iptables (and firewalld, when it runs)."""

    def ensure(self, plan: FirewallPlan) -> list[str]:
        """Converge on `plan`; returns what changed."""
        ...

    def remove(self, interfaces: Sequence[str], vxlan_port: int) -> list[str]:
        """Remove krnet's rules; returns what was removed."""
        ...


class DockerNetworks(Protocol):
    """This node's Docker daemon, as far as krnet's networks go."""

    def ensure(self, specs: Sequence[NetworkSpec]) -> list[str]:
        """Converge these networks; a KrnetError (DockerError) when Docker does not answer."""
        ...

    def remove(self, name: str) -> list[str]:
        """Remove krnet's network `name`, or keep it (and say so) while containers use it."""
        ...


# One probe round through these targets at this MTU (probe.send_probes).
Prober = Callable[[Sequence["ProbeTarget"], int], list["ProbeOutcome"]]


@dataclass(frozen=True)
class Adoption:
    """A tunnel the kernel has and the record lost: it becomes an inactive runner record."""

    runner_id: int
    physical_ip: str
    vni: int
    subnet: str


class PlaneEvents(Protocol):
    """Where a plane's changes and adoptions go; the control layer decides what to record."""

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        """A pass's changes (change, runner id), in order: kept together (one transaction)."""
        ...

    def adopted(self, adoption: Adoption) -> None: ...


class RunnerAllocation(OverlayAllocation, Protocol):
    """All the fields of a runner's allocation its data plane builds from."""

    @property
    def runner_id(self) -> int: ...
    @property
    def vni(self) -> int: ...
    @property
    def host_physical_ip(self) -> str: ...
    @property
    def runner_physical_ip(self) -> str: ...
    @property
    def host_overlay_ip(self) -> str: ...
    @property
    def vxlan_id(self) -> int: ...
    @property
    def overlay_cidr(self) -> str: ...
    @property
    def vxlan_port(self) -> int: ...
