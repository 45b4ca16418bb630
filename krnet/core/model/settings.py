"""Settings values: every option of the reference with its exact default, plus krnet's own keys.

Plain frozen values with no I/O; loading them from files, the environment and flags is
`krnet.config`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

from krnet.core.model.plan import VXLAN_OVERHEAD, OverlayPlan
from krnet.errors import ConfigError

Mode = Literal["host", "runner"]
OverlayMode = Literal["hub", "direct"]  # hub: every packet via the host; direct: runner to runner


@dataclass(frozen=True)
class Settings:
    """Effective settings of one node. Field names are the reference's, in lower case."""

    mode: Mode = "host"
    # Host (reference: "Overlay Network Settings")
    host_reachable_address: str = "127.0.0.1"
    overlay_enabled: bool = False
    overlay_bridge_name: str = "kohaku-overlay"
    overlay_host_ip: str = "10.0.0.1"
    overlay_host_prefix: int = 8
    overlay_vxlan_id: int = 100
    overlay_vxlan_port: int = 4789
    overlay_mtu: int = 1450
    # Runner (reference: "Default Network Settings" and "Overlay Network Settings")
    docker_network_name: str = "kohakuriver-net"
    docker_network_subnet: str = "172.30.0.0/16"
    docker_network_gateway: str = "172.30.0.1"
    overlay_network_name: str = "kohakuriver-overlay"
    # krnet's own (docs/design.md "Configuration")
    host_address: str | None = None
    join_port: int = 8470
    join_bind: str = "0.0.0.0"
    runner_address: str | None = None
    join_token: str | None = None
    join_token_file: str | None = None
    heartbeat_interval: float = 5.0
    runner_timeout: float = 30.0
    overlay_runner_prefix: int = 16
    vxlan_port_guard: bool = True
    reconcile_interval: float = 30.0
    probe_interval: float = 5.0
    tui_refresh_interval: float = 2.0
    max_connections: int = 1024
    handshake_timeout: float = 10.0
    metrics_bind: str = ""  # HOST:PORT of /metrics, /healthz and /readyz; empty: off
    overlay_mode: OverlayMode = "hub"  # the host's decides; sent to runners in `welcome`

    def plan(self) -> OverlayPlan:
        """The address plan these settings describe (validated at load time)."""
        return OverlayPlan.build(
            self.overlay_host_ip,
            self.overlay_host_prefix,
            self.overlay_runner_prefix,
            self.overlay_vxlan_id,
        )


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus, for each field, the source that set it ("default", a file path, ...)."""

    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    data_dir: Path = Path(".")
    config_path: Path | None = None  # where krnet.toml is looked for, whether or not it exists


def is_loopback_reachable_address(settings: Settings) -> bool:
    """True for the reference's default 127.0.0.1: the host then uses each join's local address."""
    return IPv4Address(settings.host_reachable_address).is_loopback


def check_mtu_fits_underlay(
    settings: Settings, underlay_mtu: int, *, link: str | None = None
) -> None:
    """Refuse an overlay MTU the underlay link cannot carry once VXLAN adds its 50 bytes."""
    if settings.overlay_mtu > underlay_mtu - VXLAN_OVERHEAD:
        where = f"link {link}" if link else "the underlay link"
        raise ConfigError(
            f"overlay_mtu = {settings.overlay_mtu} does not fit {where} (MTU {underlay_mtu}) plus "
            f"{VXLAN_OVERHEAD} bytes of VXLAN overhead: set overlay_mtu to at most "
            f"{underlay_mtu - VXLAN_OVERHEAD} on the host and every runner"
        )


def fallback_subnet_overlaps(settings: Settings, underlay: Iterable[IPv4Network] = ()) -> list[str]:
    """What `docker_network_subnet` overlaps: the overlay network, an underlay network; each
    one a sentence naming both (empty when it overlaps neither)."""
    fallback = IPv4Network(settings.docker_network_subnet)
    overlay = settings.plan().network
    found = []
    if fallback.overlaps(overlay):
        found.append(
            f"docker_network_subnet {fallback} lies in the overlay network {overlay} "
            f"(overlay_host_ip {settings.overlay_host_ip}/{settings.overlay_host_prefix}), "
            "where runner subnets are cut"
        )
    found += [
        f"docker_network_subnet {fallback} overlaps the underlay network {network}"
        for network in sorted(set(underlay))
        if fallback.overlaps(network)
    ]
    return found


FALLBACK_SUBNET_FIX = (
    "set docker_network_subnet (and docker_network_gateway) to a private range outside the "
    'overlay and every underlay network, e.g. docker_network_subnet = "192.168.240.0/24", '
    'docker_network_gateway = "192.168.240.1"'
)
