"""Gathering a NodeSnapshot in one pass: record, kernel, sysctls, firewall, Docker and probes.

Each part is read through the module that owns it (the record reader, netlink, firewall,
dockernet, probe), once. A part that cannot be read becomes a "<part>: <reason>" entry in
`errors`, so diagnosis says what it could not see instead of failing whole. Blocking: call it from a
thread (the TUI's worker) or a plain command, never from a running asyncio loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, TypeVar

from krnet.core.model.node_state import DockerState, LinkInfo, ProbeResult, RouteInfo, RuleInfo
from krnet.core.model.plan import RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.core.model.records import ACTIVE, EventRecord, RunnerRecord
from krnet.core.model.runner_state import RunnerState
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.observe.diagnose.check import ip_of
from krnet.core.observe.status import runner_settings
from krnet.errors import KrnetError, StoreError

if TYPE_CHECKING:
    from krnet.core.model.settings import LoadedSettings, Settings

EVENT_LIMIT = 200
T = TypeVar("T")
PROBE_FILE_AGE = 3  # probe_interval periods after which the service's results count as stale


def gather_snapshot(
    loaded: LoadedSettings, *, probe: bool = False, events: bool = False
) -> NodeSnapshot:
    """This node's state now; `probe` sends a DF probe round instead of reading the service's."""
    local = loaded.settings
    state = _runner_state(loaded) if local.mode == "runner" else None
    settings = runner_settings(local, state)
    errors: list[str] = []
    now = datetime.now(timezone.utc)
    runners: Sequence[RunnerRecord] = _read("record", errors, lambda: _runners(loaded), ())
    no_kernel: tuple[dict[str, LinkInfo], tuple[RouteInfo, ...]] = ({}, ())
    links, routes = _read("kernel", errors, _kernel, no_kernel)
    rules: tuple[RuleInfo, ...] = _read("firewall", errors, _rules, ())
    underlay = underlay_link(settings, links, routes)
    docker = None
    if settings.mode == "runner":
        docker = _read("docker", errors, lambda: _docker(settings, links), None)
    probes: Mapping[int, ProbeResult] = _read(
        "probe", errors, lambda: _probes(loaded, runners, probe, now), {}
    )
    log: Sequence[EventRecord] = _read(
        "record", errors, lambda: _events(loaded) if events else [], []
    )
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
        sysctls=read_sysctls(sysctl_keys(links, _bridge(settings))),
        underlay_link=underlay,
        underlay_mtu=links[underlay].mtu if underlay else None,
        probes=probes,
        events=tuple(log),
        errors=tuple(errors),
        hostname=socket.gethostname(),
        runner_state=state,
        local_settings=local if settings != local else None,
    )


def _runner_state(loaded: LoadedSettings) -> RunnerState | None:
    from krnet.core.record.reader import read_runner_state

    return read_runner_state(loaded.data_dir)


def _read(part: str, errors: list[str], read: Callable[[], T], default: T) -> T:
    """`read()`, or `default` with the reason noted under `part`."""
    try:
        return read()
    except KrnetError as exc:
        errors.append(f"{part}: {exc}")
        return default


def _runners(loaded: LoadedSettings) -> list[RunnerRecord]:
    from krnet.core.record import load_runners
    from krnet.core.record.reader import database_path

    return load_runners(database_path(loaded.data_dir))


def _events(loaded: LoadedSettings) -> list[EventRecord]:
    """The latest events, read-only: a snapshot never migrates or writes the record."""
    from krnet.core.record.reader import SCHEMA_HEAD, database_path, read_events

    path = database_path(loaded.data_dir)
    events = read_events(path, EVENT_LIMIT)
    if events is None:
        raise StoreError(
            f"{path}: the event log is read only from a record at schema {SCHEMA_HEAD} (this one "
            "is older or damaged): `krnet db current` says which, `krnet db upgrade` migrates it"
        )
    return events


def _kernel() -> tuple[dict[str, LinkInfo], tuple[RouteInfo, ...]]:
    from krnet.core.dataplane import netlink

    with netlink.open_netlink() as ipr:
        state = netlink.read_kernel_state(ipr)
    return dict(state.links), tuple(state.routes)


def _rules() -> tuple[RuleInfo, ...]:
    from krnet.core.dataplane import firewall

    return firewall.read_rules(firewall.Iptables())


def _allowlist(rules: Iterable[RuleInfo]) -> tuple[str, ...]:
    from krnet.core.dataplane import firewall

    return firewall.guard_allowlist(rules)


def _docker(settings: Settings, links: Mapping[str, LinkInfo]) -> DockerState:
    from krnet.core.dataplane.dockernet import read_docker_state

    tunnel = links.get(RUNNER_TUNNEL)
    ready = bool(tunnel and tunnel.up and settings.overlay_bridge_name in links)
    return read_docker_state(settings, overlay_ready=ready)


def _probes(
    loaded: LoadedSettings, runners: Iterable[RunnerRecord], send: bool, now: datetime
) -> dict[int, ProbeResult]:
    from krnet.core.dataplane import probe

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


def sysctl_keys(links: Iterable[str], bridge: str | None = None) -> list[str]:
    """The parameters diagnosis reads: forwarding, rp_filter of `all` and each tunnel, and on a
    runner (its bridge given) `send_redirects` of all, default and that bridge."""
    from krnet.core.dataplane.sysctl import redirect_keys

    tunnels = [name for name in links if _is_tunnel(name)]
    names = ["all", *tunnels]
    redirects = list(redirect_keys(bridge)) if bridge else []
    return [
        "net.ipv4.ip_forward",
        *(f"net.ipv4.conf.{name}.rp_filter" for name in names),
        *redirects,
    ]


def read_sysctls(keys: Iterable[str]) -> dict[str, str]:
    from krnet.core.dataplane.sysctl import read_sysctl

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


def _bridge(settings: Settings) -> str | None:
    """A runner's overlay bridge, whose `send_redirects` diagnosis reads; a host has none."""
    return settings.overlay_bridge_name if settings.mode == "runner" else None


def _is_tunnel(name: str) -> bool:
    return name == RUNNER_TUNNEL or runner_id_from_tunnel(name) is not None
