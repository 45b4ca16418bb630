"""What a runner's agent says about itself: the allocation it holds and the network it chose.

The agent publishes it in the data dir (`runner_state.json`) whenever it changes; status,
diagnosis and the TUI read it back, so a runner is judged by the allocation the host gave it
(the host's overlay scheme) rather than by local settings that may not repeat the host's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from ipaddress import IPv4Network

from krnet.core.model.settings import OverlayMode, Settings

STATE_FILE = "runner_state.json"
OVERLAY_OFF = "overlay_enabled is false"
NOT_JOINED = "krnet serve has not joined this runner to the host yet"


@dataclass(frozen=True)
class HeldAllocation:
    """The welcome's allocation as the runner holds it (the fields status and diagnosis use)."""

    runner_id: int
    vni: int
    subnet: str
    gateway: str
    host_overlay_ip: str
    host_ip_on_subnet: str
    host_physical_ip: str
    overlay_cidr: str
    bridge_name: str
    mtu: int
    vxlan_port: int
    vxlan_id: int
    overlay_mode: OverlayMode = "hub"  # the host's, sent in its welcome


@dataclass(frozen=True)
class RunnerState:
    """The runner agent's own account: what it holds, which network containers use, and why."""

    updated_at: datetime
    allocation: HeldAllocation | None  # None: the runner holds none (never joined, or lost it)
    network: str  # the Docker network containers should use now (reference: "Network Selection")
    network_reason: str | None = None  # why it is the fallback network; None on the overlay
    setup_error: str | None = None  # the last set-up failure, with its fix; None when none


def held_settings(settings: Settings, held: HeldAllocation) -> Settings:
    """This runner's settings with the overlay scheme of the allocation it holds."""
    return replace(
        settings,
        overlay_host_ip=held.host_overlay_ip,
        overlay_host_prefix=IPv4Network(held.overlay_cidr).prefixlen,
        overlay_runner_prefix=IPv4Network(held.subnet).prefixlen,
        overlay_vxlan_id=held.vxlan_id,
        overlay_vxlan_port=held.vxlan_port,
        overlay_mtu=held.mtu,
        overlay_bridge_name=held.bridge_name,
        overlay_mode=held.overlay_mode,
    )


SCHEME_KEYS = (
    "overlay_host_ip",
    "overlay_host_prefix",
    "overlay_runner_prefix",
    "overlay_bridge_name",
)


def scheme_differences(local: Settings, held: Settings) -> list[tuple[str, object, object]]:
    """(key, this runner's value, the host's value) for each scheme key the two disagree on."""
    return [
        (key, getattr(local, key), getattr(held, key))
        for key in SCHEME_KEYS
        if getattr(local, key) != getattr(held, key)
    ]
