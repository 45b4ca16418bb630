"""Gathering a NodeSnapshot in one pass: record, kernel, sysctls, firewall, Docker and probes.

Each part is read through the module that owns it (record_file, netlink, firewall, dockernet,
probe), once. A part that cannot be read becomes a "<part>: <reason>" entry in `errors`, so
diagnosis says what it could not see instead of failing whole. Blocking: call it from a
thread (the TUI's worker) or a plain command, never from a running asyncio loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, TypeVar

from krnet.core.check import ip_of
from krnet.core.plan import RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.core.records import ACTIVE, EventRecord, RunnerRecord
from krnet.core.snapshot import (
    DockerState,
    LinkInfo,
    NodeSnapshot,
    ProbeResult,
    RouteInfo,
    RuleInfo,
)
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.config import LoadedSettings, Settings

EVENT_LIMIT = 200
T = TypeVar("T")
PROBE_FILE_AGE = 3  # probe_interval periods after which the service's results count as stale


def gather_snapshot(
    loaded: LoadedSettings, *, probe: bool = False, events: bool = False
) -> NodeSnapshot:
    """This node's state now; `probe` sends a DF probe round instead of reading the service's."""
    settings = loaded.settings
    errors: list[str] = []
    now = datetime.now(timezone.utc)
    runners = _read("record", errors, lambda: _runners(loaded), ())
    links, routes = _read("kernel", errors, _kernel, ({}, ()))
    rules = _read("firewall", errors, _rules, ())
    underlay = underlay_link(settings, links, routes)
    docker = None
    if settings.mode == "runner":
        docker = _read("docker", errors, lambda: _docker(settings, links), None)
    probes = _read("probe", errors, lambda: _probes(loaded, runners, probe, now), {})
    log = _read("record", errors, lambda: _events(loaded) if events else [], [])
    return NodeSnapshot(
        taken_at=now,
        mode=settings.mode,
        settings=settings,
        runners=tuple(runners),
        links=links,
        routes=routes,
        rules=rules,
        guard_allowlist=_allowlist(rules),
        docker=docker,
        sysctls=read_sysctls(sysctl_keys(links)),
        underlay_link=underlay,
        underlay_mtu=links[underlay].mtu if underlay else None,
        probes=probes,
        events=tuple(log),
        errors=tuple(errors),
        hostname=socket.gethostname(),
    )


def _read(part: str, errors: list[str], read: Callable[[], T], default: T) -> T:
    """`read()`, or `default` with the reason noted under `part`."""
    try:
        return read()
    except KrnetError as exc:
        errors.append(f"{part}: {exc}")
        return default


def _runners(loaded: LoadedSettings) -> list[RunnerRecord]:
    from krnet.core.record_file import database_path, load_runners

    return load_runners(database_path(loaded.data_dir))


def _events(loaded: LoadedSettings) -> list[EventRecord]:
    from krnet.core.record_file import database_path

    path = database_path(loaded.data_dir)
    if not path.exists():
        return []
    from krnet.core.store import Store

    with Store(path) as store:
        return list(store.events(EVENT_LIMIT))


def _kernel() -> tuple[dict[str, LinkInfo], tuple[RouteInfo, ...]]:
    from krnet.core import netlink

    with netlink.open_netlink() as ipr:
        state = netlink.read_kernel_state(ipr)
    return dict(state.links), tuple(state.routes)


def _rules() -> tuple[RuleInfo, ...]:
    from krnet.core import firewall

    return firewall.read_rules(firewall.Iptables())


def _allowlist(rules: Iterable[RuleInfo]) -> tuple[str, ...]:
    from krnet.core import firewall

    return firewall.guard_allowlist(rules)


def _docker(settings: Settings, links: Mapping[str, LinkInfo]) -> DockerState:
    from krnet.core.dockernet import read_docker_state

    tunnel = links.get(RUNNER_TUNNEL)
    ready = bool(tunnel and tunnel.up and settings.overlay_bridge_name in links)
    return read_docker_state(settings, overlay_ready=ready)


def _probes(
    loaded: LoadedSettings, runners: Iterable[RunnerRecord], send: bool, now: datetime
) -> dict[int, ProbeResult]:
    from krnet.core import probe

    settings = loaded.settings
    if settings.mode != "host":
        return {}
    if not send:
        max_age = PROBE_FILE_AGE * settings.probe_interval
        return probe.read_results(loaded.data_dir / probe.RESULTS_FILE, now, max_age)
    active = [runner.runner_id for runner in runners if runner.status == ACTIVE]
    targets = probe.probe_targets(settings.plan(), active)
    book = probe.ProbeBook()
    book.record_all(probe.send_probes(targets, settings.overlay_mtu), now)
    return book.results()


def sysctl_keys(links: Iterable[str]) -> list[str]:
    """The parameters diagnosis reads: forwarding, and rp_filter of `all` and each tunnel."""
    tunnels = [name for name in links if _is_tunnel(name)]
    names = ["all", *tunnels]
    return ["net.ipv4.ip_forward", *(f"net.ipv4.conf.{name}.rp_filter" for name in names)]


def read_sysctls(keys: Iterable[str]) -> dict[str, str]:
    from krnet.core.sysctl import read_sysctl

    values = {key: read_sysctl(key) for key in keys}
    return {key: value for key, value in values.items() if value is not None}


def underlay_link(
    settings: Settings, links: Mapping[str, LinkInfo], routes: Iterable[RouteInfo]
) -> str | None:
    """The link VXLAN packets leave by: the one holding the tunnel's local address, else the
    configured address's, else the default route's."""
    wanted = [_tunnel_local(links), settings.runner_address, settings.host_reachable_address]
    for address in wanted:
        holder = _link_holding(links, address)
        if holder is not None:
            return holder
    default = next((route.dev for route in routes if route.dst == "default"), None)
    return default if default in links else None


def _tunnel_local(links: Mapping[str, LinkInfo]) -> str | None:
    for name, link in sorted(links.items()):
        if link.vxlan and link.vxlan.local and _is_tunnel(name):
            return link.vxlan.local
    return None


def _link_holding(links: Mapping[str, LinkInfo], address: str | None) -> str | None:
    try:
        wanted = IPv4Address(address or "")
    except ValueError:
        return None
    if wanted.is_loopback:
        return None
    return next(
        (name for name, link in links.items() if str(wanted) in map(ip_of, link.addresses)), None
    )


def _is_tunnel(name: str) -> bool:
    return name == RUNNER_TUNNEL or runner_id_from_tunnel(name) is not None
