"""Diagnosis: pure checks over a NodeSnapshot, each pass/warn/fail with a detail and a fix.

`krnet doctor`, the TUI and the per-runner `mismatches` of `krnet node overlay` all read
these; nothing here touches the machine, so every check is tested from recorded snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from ipaddress import AddressValueError, IPv4Address, IPv4Interface

from krnet.core.model.must_match import differences
from krnet.core.model.runner_state import scheme_differences
from krnet.core.model.settings import FALLBACK_SUBNET_FIX, fallback_subnet_overlaps
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.observe.diagnose.check import (
    FAIL,
    PASS,
    SEVERITY,
    WARN,
    Check,
    Context,
    Status,
    passed,
)
from krnet.core.observe.diagnose.direct import check_direct_paths
from krnet.core.observe.diagnose.docker import check_docker
from krnet.core.observe.diagnose.far_end import check_far_ends
from krnet.core.observe.diagnose.firewall import check_firewall, check_port_guard
from krnet.core.observe.diagnose.mtu import check_link_mtu, check_underlay_mtu
from krnet.core.observe.diagnose.probe import check_probes
from krnet.core.observe.diagnose.redirects import check_send_redirects
from krnet.core.observe.diagnose.routing import check_routes, check_rp_filter
from krnet.core.observe.diagnose.tunnels import check_tunnels
from krnet.core.observe.diagnose.vni_map import check_vni_map

__all__ = ["FAIL", "PASS", "WARN", "Check", "Status", "diagnose", "runner_mismatches"]

# checks whose problems are differences between what a runner should have and what it has
MISMATCH_CHECKS = frozenset(
    {"settings_match", "tunnels", "far_end", "vni_map", "link_mtu", "routes"}
)
MTU_CHECKS = frozenset({"underlay_mtu", "link_mtu", "probe"})


def diagnose(snapshot: NodeSnapshot) -> list[Check]:
    """Every check for this node, in a fixed reading order (see `worst_first` for triage)."""
    ctx = Context(snapshot)
    checks = _check_read_errors(ctx) + _check_overlay_enabled(ctx) + _check_fallback_subnet(ctx)
    if not snapshot.settings.overlay_enabled:
        return checks + (check_docker(ctx) if not ctx.host else [])
    for run in _host_checks() if ctx.host else _runner_checks():
        checks += run(ctx)
    return checks


def _host_checks() -> list[Callable[[Context], list[Check]]]:
    return [
        _check_reachable_address,
        *_shared_checks(),
        check_far_ends,
        check_probes,
        _check_silent_runners,
    ]


def _runner_checks() -> list[Callable[[Context], list[Check]]]:
    return [
        _check_allocation_scheme,
        _check_setup,
        *_shared_checks(),
        check_send_redirects,
        check_docker,
    ]


def _shared_checks() -> list[Callable[[Context], list[Check]]]:
    return [
        _check_ip_forward,
        _check_settings_match,
        check_tunnels,
        check_routes,
        check_vni_map,
        check_underlay_mtu,
        check_link_mtu,
        check_firewall,
        check_port_guard,
        check_rp_filter,
        check_direct_paths,
    ]


def worst_first(checks: Iterable[Check]) -> list[Check]:
    """Failures, then warnings, then passes; reading order kept within each."""
    return sorted(checks, key=lambda check: -SEVERITY[check.status])


def runner_health(checks: Iterable[Check]) -> dict[int, Status]:
    """The worst status of the problems attributed to each runner (absent: healthy)."""
    health: dict[int, Status] = {}
    for check in checks:
        rid = check.runner_id
        if rid is not None and SEVERITY[check.status] > SEVERITY[health.get(rid, PASS)]:
            health[rid] = check.status
    return health


def runner_mismatches(
    snapshot: NodeSnapshot, checks: Iterable[Check] | None = None
) -> dict[int, list[str]]:
    """Per runner, each difference between what it should have and what it has (may be empty)."""
    found = diagnose(snapshot) if checks is None else checks
    mismatches: dict[int, list[str]] = {runner.runner_id: [] for runner in snapshot.runners}
    for check in found:
        if (
            check.runner_id in mismatches
            and check.check in MISMATCH_CHECKS
            and check.status != PASS
        ):
            mismatches[check.runner_id].append(check.detail)
    return mismatches


def _check_read_errors(ctx: Context) -> list[Check]:
    return [
        Check(
            "read_state",
            WARN,
            f"could not read {error}; checks of that part are skipped",
            "run `sudo krnet doctor` on that node (root reads links, rules and sysctls)",
        )
        for error in ctx.snapshot.errors
    ]


def _check_overlay_enabled(ctx: Context) -> list[Check]:
    if ctx.settings.overlay_enabled:
        return [Check("overlay_enabled", PASS, "the overlay is enabled")]
    where = "containers use kohakuriver-net" if not ctx.host else "no tunnels are built"
    return [
        Check(
            "overlay_enabled",
            WARN,
            f"overlay_enabled is false: {where}",
            f"set overlay_enabled = true in krnet.toml (OVERLAY_ENABLED = True in "
            f"~/.kohakuriver/{ctx.snapshot.mode}_config.py), then restart krnet serve",
        )
    ]


def _check_fallback_subnet(ctx: Context) -> list[Check]:
    """docker_network_subnet must overlap neither the overlay network nor the underlay."""
    settings = ctx.settings
    link = ctx.link(ctx.snapshot.underlay_link or "")
    underlay = [IPv4Interface(cidr).network for cidr in link.addresses] if link else []
    found = fallback_subnet_overlaps(settings, underlay)
    if not settings.overlay_enabled:
        found = [problem for problem in found if "overlay network" not in problem]
    problems = [Check("docker_subnet", WARN, problem, FALLBACK_SUBNET_FIX) for problem in found]
    detail = f"docker_network_subnet {settings.docker_network_subnet} overlaps no other network"
    return passed("docker_subnet", problems, detail)


def _check_allocation_scheme(ctx: Context) -> list[Check]:
    """A runner uses the host's scheme from its allocation; local keys that differ are noted."""
    local = ctx.snapshot.local_settings
    state = ctx.snapshot.runner_state
    if state is None or state.allocation is None:
        return []  # no allocation held: this runner is judged by its own settings
    found = scheme_differences(local or ctx.settings, ctx.settings)
    if not found:
        return [Check("allocation_scheme", PASS, "the allocation matches this runner's keys")]
    mine = ", ".join(f"{key} {ours}" for key, ours, _ in found)
    hosts = ", ".join(f"{key} {theirs}" for key, _, theirs in found)
    keys = ", ".join(f"{key} = {json.dumps(theirs)}" for key, _, theirs in found)
    return [
        Check(
            "allocation_scheme",
            WARN,
            f"this runner's settings say {mine}; the host's allocation says {hosts}: this runner "
            "runs by the allocation, and every check here judges it by the allocation",
            f"set {keys} in this runner's krnet.toml, or leave them to the host",
        )
    ]


def _check_setup(ctx: Context) -> list[Check]:
    """The runner agent's last attempt to build its overlay, and why containers use the fallback."""
    state = ctx.snapshot.runner_state
    if state is None:  # no agent has published here: the docker check says what is in use
        return []
    if state.setup_error:
        fix = "the message names the fix; krnet serve retries on every heartbeat"
        return [
            Check("overlay_setup", FAIL, f"the overlay set-up failed: {state.setup_error}", fix)
        ]
    if state.network_reason:
        detail = f"containers use {state.network}: {state.network_reason}"
        return [Check("overlay_setup", WARN, detail, "see the reason; krnet serve keeps retrying")]
    return [Check("overlay_setup", PASS, f"the overlay is set up; containers use {state.network}")]


def _check_reachable_address(ctx: Context) -> list[Check]:
    """HOST_REACHABLE_ADDRESS must be a non-loopback address on one of this host's links."""
    if ctx.unread("settings"):
        return []
    address = ctx.settings.host_reachable_address
    try:
        parsed = IPv4Address(address)
    except AddressValueError:
        detail = f"{address!r} is not an IPv4 address"
        return [Check("host_reachable_address", FAIL, detail, _reachable_fix(ctx))]
    if parsed.is_loopback:
        detail = (
            f"host_reachable_address is {address} (loopback): runners cannot reach it; krnet "
            "falls back to the address each runner's join arrived on"
        )
        return [Check("host_reachable_address", WARN, detail, _reachable_fix(ctx))]
    if ctx.unread("kernel") or address in ctx.local_addresses:
        return [Check("host_reachable_address", PASS, f"{address} is on a local link")]
    detail = f"host_reachable_address {address} is on no link of this host: tunnels cannot start"
    return [Check("host_reachable_address", FAIL, detail, _reachable_fix(ctx))]


def _reachable_fix(ctx: Context) -> str:
    """The setting to use, naming a LAN address of this host (made only when a fix is shown)."""
    candidates = [ip for ip in ctx.local_addresses if not _loopback(ip) and not _overlay(ctx, ip)]
    example = min(candidates) if candidates else "this host's LAN address"
    return f'set host_reachable_address = "{example}" in krnet.toml (HOST_REACHABLE_ADDRESS)'


def _loopback(ip: str) -> bool:
    return IPv4Address(ip).is_loopback


def _overlay(ctx: Context, ip: str) -> bool:
    return IPv4Address(ip) in ctx.plan.network


def _check_ip_forward(ctx: Context) -> list[Check]:
    if ctx.unread("sysctl"):
        return []
    value = ctx.snapshot.sysctls.get("net.ipv4.ip_forward")
    fix = "sysctl -w net.ipv4.ip_forward=1 (krnet serve sets it on start)"
    if value == "1":
        return [Check("ip_forward", PASS, "net.ipv4.ip_forward is 1")]
    if value is None:
        return [Check("ip_forward", WARN, "net.ipv4.ip_forward could not be read", fix)]
    detail = f"net.ipv4.ip_forward is {value}: this node does not route overlay traffic"
    return [Check("ip_forward", FAIL, detail, fix)]


def _check_settings_match(ctx: Context) -> list[Check]:
    """OVERLAY_VXLAN_ID, OVERLAY_VXLAN_PORT and OVERLAY_MTU must be equal on every node."""
    problems = []
    for runner in ctx.runners:
        for found in differences(ctx.settings, runner):
            name, theirs, ours = found.rule.setting, found.reported, found.expected
            if ctx.host:
                detail = f"{ctx.runner_label(runner)} has {name} {theirs}, the host has {ours}"
                fix = f"set {name} = {ours} on {runner.hostname} and restart its agent"
            else:
                detail = f"this runner has {name} {ours}, the host has {theirs}"
                fix = f"set {name} = {theirs} in this runner's krnet.toml and restart krnet serve"
            problems.append(Check("settings_match", FAIL, detail, fix, runner.runner_id))
    return passed("settings_match", problems, "VNI base, port and MTU match on every node")


def _check_silent_runners(ctx: Context) -> list[Check]:
    timeout = ctx.settings.runner_timeout
    problems = []
    for runner in ctx.runners:
        silence = ctx.snapshot.taken_at - runner.last_seen
        if silence <= timedelta(seconds=timeout):
            continue
        problems.append(
            Check(
                "runner_silent",
                WARN,
                f"{ctx.runner_label(runner)} silent for {format_age(silence)} (runner_timeout "
                f"{timeout:g}s); its tunnel {ctx.tunnel_name(runner.runner_id)} stays up",
                f"on {runner.hostname}: systemctl status krnet; it must reach this host's "
                f"join port {ctx.settings.join_port}",
                runner.runner_id,
            )
        )
    return passed("runner_silent", problems, "every runner was heard within runner_timeout")


def format_age(age: timedelta) -> str:
    """`75s` -> `1m 15s`: short enough for a table cell."""
    seconds = max(0, int(age.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or "0s"
