"""Checks that refuse settings which cannot work, before anything is changed.

Each refusal is one ConfigError naming the key, its value, where it came from and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from krnet.core.model.peers import MAX_DIRECT_RUNNERS
from krnet.core.model.plan import (
    HOST_DEVICE,
    IFNAME_MAX,
    RUNNER_TUNNEL,
    VXLAN_OVERHEAD,
    PlanError,
    runner_id_from_tunnel,
)
from krnet.core.model.settings import FALLBACK_SUBNET_FIX, Settings, fallback_subnet_overlaps
from krnet.errors import ConfigError

MIN_MTU = 576  # the smallest datagram every IPv4 host must accept (RFC 791)
MAX_MTU = 65535 - VXLAN_OVERHEAD  # the largest overlay MTU any underlay could carry
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BAD_IFNAME = re.compile(r"[/:\s]")
_BROADCAST = IPv4Address("255.255.255.255")


def _refuse(
    settings: Settings, sources: Mapping[str, str], key: str, problem: str, fix: str
) -> ConfigError:
    value = getattr(settings, key)
    return ConfigError(f"{key} = {value!r} (from {sources.get(key, 'default')}) {problem}: {fix}")


def validate(settings: Settings, sources: Mapping[str, str]) -> None:
    """Refuse settings that cannot work, before anything is changed."""
    _check_mtu_and_ports(settings, sources)
    _check_addresses(settings, sources)
    _check_docker_network(settings, sources)
    _check_plan(settings, sources)
    _check_direct_size(settings, sources)
    _check_names(settings, sources)
    _check_timing(settings, sources)
    _check_token(settings, sources)
    _check_metrics_bind(settings, sources)
    if settings.mode == "runner" and settings.overlay_enabled and settings.host_address is None:
        raise ConfigError(
            f"host_address is not set, but mode = 'runner' (from {sources.get('mode', 'default')}) "
            f"with overlay_enabled (from {sources.get('overlay_enabled', 'default')}) must know "
            "where the host listens: set host_address (or KRNET_HOST_ADDRESS) to the host's "
            "address, e.g. with `krnet init runner --host-address ADDRESS`"
        )


def warnings(settings: Settings, sources: Mapping[str, str]) -> list[str]:
    """Settings that work but will bite (shown by `config show`; `doctor` adds the underlay)."""
    source = sources.get("docker_network_subnet", "default")
    found = [
        f"{problem} (docker_network_subnet from {source}): {FALLBACK_SUBNET_FIX}"
        for problem in fallback_subnet_overlaps(settings)
    ]
    mode_source = sources.get("overlay_mode", "default")
    if settings.mode == "runner" and mode_source != "default":
        found.append(
            f"overlay_mode = {settings.overlay_mode!r} (from {mode_source}) is set on a runner, "
            "but the host decides it and sends it in `welcome`: set overlay_mode on the host "
            "and remove it here"
        )
    return found


def _check_mtu_and_ports(settings: Settings, sources: Mapping[str, str]) -> None:
    if not MIN_MTU <= settings.overlay_mtu <= MAX_MTU:
        limit = (
            f"below {MIN_MTU}, the smallest packet every IPv4 host must take"
            if settings.overlay_mtu < MIN_MTU
            else (f"above {MAX_MTU} (65535 minus {VXLAN_OVERHEAD} bytes of VXLAN overhead)")
        )
        raise _refuse(
            settings,
            sources,
            "overlay_mtu",
            f"is {limit}",
            f"set it to the underlay MTU minus {VXLAN_OVERHEAD}, e.g. 1450 for 1500-byte links "
            "or 8950 for 9000-byte jumbo frames, the same on the host and every runner",
        )
    for key, protocol, default in (("overlay_vxlan_port", "UDP", 4789), ("join_port", "TCP", 8470)):
        if not 1 <= getattr(settings, key) <= 65535:
            raise _refuse(
                settings,
                sources,
                key,
                "is outside 1..65535",
                f"use a {protocol} port, e.g. {default}",
            )


def _ipv4(settings: Settings, sources: Mapping[str, str], key: str, fix: str) -> IPv4Address:
    try:
        return IPv4Address(getattr(settings, key))
    except ValueError:
        raise _refuse(settings, sources, key, "is not an IPv4 address", fix) from None


def _is_hostname(name: str) -> bool:
    labels = name.removesuffix(".").split(".")
    return len(name) <= 253 and not labels[-1].isdigit() and all(map(_LABEL.fullmatch, labels))


_ENDPOINT_FIXES = {
    "host_reachable_address": "set it to this host's LAN address, e.g. 192.168.88.53",
    "runner_address": "set it to this runner's LAN address, or remove it to use the address "
    "that reaches the host",
    "host_address": "set it to the host's IPv4 address or DNS name",
}


def _check_addresses(settings: Settings, sources: Mapping[str, str]) -> None:
    _ipv4(settings, sources, "overlay_host_ip", "set it to an address such as 10.0.0.1")
    _ipv4(settings, sources, "join_bind", "set it to 0.0.0.0 (every address) or one of this host's")
    for key, fix in _ENDPOINT_FIXES.items():
        value = getattr(settings, key)
        if value is None or (key == "host_address" and _is_hostname(value)):
            continue
        address = _ipv4(settings, sources, key, fix)
        if address.is_unspecified or address.is_multicast or address == _BROADCAST:
            raise _refuse(settings, sources, key, "is not a unicast address a tunnel can use", fix)


def _check_metrics_bind(settings: Settings, sources: Mapping[str, str]) -> None:
    """`metrics_bind` is empty (off) or IPV4:PORT."""
    if not settings.metrics_bind:
        return
    address, _, port = settings.metrics_bind.rpartition(":")
    try:
        IPv4Address(address)
        valid = port.isdigit() and 1 <= int(port) <= 65535
    except ValueError:
        valid = False
    if not valid:
        raise _refuse(
            settings,
            sources,
            "metrics_bind",
            "is not IPV4:PORT",
            "set it to an address of this node and a free TCP port, e.g. 127.0.0.1:9470 "
            '(0.0.0.0:9470 for every address), or to "" to serve no metrics',
        )


def _check_docker_network(settings: Settings, sources: Mapping[str, str]) -> None:
    try:
        subnet = IPv4Network(settings.docker_network_subnet)
    except ValueError:
        raise _refuse(
            settings,
            sources,
            "docker_network_subnet",
            "is not an IPv4 network (address/prefix, no host bits set)",
            "set it to a network such as 172.30.0.0/16 (the default)",
        ) from None
    gateway = _ipv4(
        settings, sources, "docker_network_gateway", f"set it to an address in {subnet}"
    )
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise _refuse(
            settings,
            sources,
            "docker_network_gateway",
            f"is not a usable address in docker_network_subnet {subnet}",
            f"set it to one, e.g. {subnet.network_address + 1}",
        )
    if settings.docker_network_name == settings.overlay_network_name:
        raise _refuse(
            settings,
            sources,
            "overlay_network_name",
            "is also docker_network_name, but a runner keeps both networks",
            "give them different names (defaults: kohakuriver-overlay, kohakuriver-net)",
        )


_PLAN_KEYS = ("overlay_host_ip", "overlay_host_prefix", "overlay_runner_prefix", "overlay_vxlan_id")


def _check_plan(settings: Settings, sources: Mapping[str, str]) -> None:
    try:
        settings.plan()
    except PlanError as exc:
        named = [key for key in _PLAN_KEYS if key in str(exc)]
        origins = "; ".join(f"{key} from {sources.get(key, 'default')}" for key in named)
        raise ConfigError(f"{exc} ({origins})") from None


def _check_direct_size(settings: Settings, sources: Mapping[str, str]) -> None:
    """A direct host pushes the whole peer table to every runner: its plan must fit one."""
    if settings.mode != "host" or settings.overlay_mode != "direct":
        return
    max_runners = settings.plan().max_runners
    if max_runners > MAX_DIRECT_RUNNERS:
        prefix_source = sources.get("overlay_runner_prefix", "default")
        raise _refuse(
            settings,
            sources,
            "overlay_mode",
            f"allows at most {MAX_DIRECT_RUNNERS} runners, but overlay_runner_prefix = "
            f"{settings.overlay_runner_prefix} (from {prefix_source}) plans {max_runners} runners",
            "set overlay_runner_prefix = 16 (the reference's /16s), or keep overlay_mode = 'hub' "
            "for more runners",
        )


def _check_names(settings: Settings, sources: Mapping[str, str]) -> None:
    name = settings.overlay_bridge_name
    if not 1 <= len(name.encode()) <= IFNAME_MAX or name in (".", "..") or _BAD_IFNAME.search(name):
        raise _refuse(
            settings,
            sources,
            "overlay_bridge_name",
            f"is not a Linux interface name (1 to {IFNAME_MAX} bytes, no '/', ':' or spaces)",
            "set it to e.g. kohaku-overlay (the default)",
        )
    if name in (HOST_DEVICE, RUNNER_TUNNEL) or runner_id_from_tunnel(name) is not None:
        raise _refuse(
            settings,
            sources,
            "overlay_bridge_name",
            "is a name krnet gives to another link",
            "set it to e.g. kohaku-overlay (the default)",
        )
    for key in ("docker_network_name", "overlay_network_name"):
        if not getattr(settings, key).strip():
            raise _refuse(
                settings, sources, key, "is empty", f"set it to e.g. {getattr(Settings(), key)}"
            )


_POSITIVE = (
    "heartbeat_interval",
    "runner_timeout",
    "reconcile_interval",
    "probe_interval",
    "tui_refresh_interval",
    "handshake_timeout",
    "max_connections",
)


def _check_timing(settings: Settings, sources: Mapping[str, str]) -> None:
    for key in _POSITIVE:
        if getattr(settings, key) <= 0:
            raise _refuse(
                settings,
                sources,
                key,
                "must be above zero",
                f"set it to e.g. {getattr(Settings(), key)}",
            )
    if settings.heartbeat_interval >= settings.runner_timeout:
        raise _refuse(
            settings,
            sources,
            "heartbeat_interval",
            f"is not shorter than runner_timeout = {settings.runner_timeout} "
            f"(from {sources.get('runner_timeout', 'default')}), so every runner would look dead",
            "keep heartbeat_interval well below runner_timeout, e.g. 5 and 30 (the defaults)",
        )


def _check_token(settings: Settings, sources: Mapping[str, str]) -> None:
    for key in ("join_token", "join_token_file"):
        value = getattr(settings, key)
        if value is not None and not value.strip():
            raise _refuse(settings, sources, key, "is empty", "remove it, or give the token (file)")
