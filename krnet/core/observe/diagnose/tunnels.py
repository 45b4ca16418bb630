"""Checks of the tunnels themselves: each runner's vxkrN (or vxlan0), kohaku-host, the bridge."""

from __future__ import annotations

from krnet.core.model.plan import HOST_DEVICE, RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.core.model.records import RunnerRecord
from krnet.core.observe.diagnose.check import FAIL, RECONCILE, WARN, Check, Context, passed


def check_tunnels(ctx: Context) -> list[Check]:
    """Every registered runner has its tunnel: VXLAN, up, right ends, port and address."""
    if ctx.unread("kernel"):
        return []
    problems: list[Check] = []
    for runner in ctx.runners:
        problems += _tunnel_problems(ctx, runner)
    problems += _host_device_problems(ctx) if ctx.host else _bridge_problems(ctx)
    if ctx.host:
        problems += _orphan_tunnels(ctx)
    elif not ctx.runners:
        problems.append(
            _tunnel_fail(
                "this runner has no allocation: it has not joined a host",
                "set host_address and join_token in krnet.toml, then run krnet serve",
            )
        )
    return passed("tunnels", problems, f"{len(ctx.runners)} tunnel(s) up with the right ends")


def _tunnel_problems(ctx: Context, runner: RunnerRecord) -> list[Check]:
    name = ctx.tunnel_name(runner.runner_id)
    link = ctx.link(name)
    rid = runner.runner_id
    who = ctx.runner_label(runner)
    if link is None:
        return [
            _tunnel_fail(
                f"{name} of {who} is missing: its containers are cut off",
                RECONCILE,
                rid,
            )
        ]
    if link.vxlan is None:
        return [
            _tunnel_fail(
                f"{name} is a {link.kind or 'plain'} link, not VXLAN",
                f"ip link del {name}; then {RECONCILE}",
                rid,
            )
        ]
    problems = []
    if not link.up:
        problems.append(_tunnel_fail(f"{name} of {who} is down", f"ip link set {name} up", rid))
    if ctx.host and link.vxlan.remote != runner.physical_ip:
        problems.append(
            _tunnel_fail(
                f"{name} sends to {link.vxlan.remote}, "
                f"but {who} registered from {runner.physical_ip}",
                RECONCILE,
                rid,
            )
        )
    if link.vxlan.local and link.vxlan.local not in ctx.local_addresses:
        problems.append(
            _tunnel_fail(
                f"{name}'s local address {link.vxlan.local} is on no link of this node: "
                "the kernel cannot send from it",
                "set host_reachable_address (host) or runner_address (runner) to this node's "
                f"LAN address; then {RECONCILE}",
                rid,
            )
        )
    port = ctx.settings.overlay_vxlan_port
    if link.vxlan.port != port:
        problems.append(
            _tunnel_fail(
                f"{name} uses UDP port {link.vxlan.port}, overlay_vxlan_port is {port}",
                f"ip link del {name}; then {RECONCILE}",
                rid,
            )
        )
    want = ctx.expected_interface(rid)
    if ctx.host and str(want) not in link.addresses:
        problems.append(
            _tunnel_fail(
                f"{name} lacks its address {want}",
                f"ip addr add {want} dev {name}",
                rid,
            )
        )
    return problems


def _tunnel_fail(detail: str, fix: str, runner_id: int | None = None) -> Check:
    return Check("tunnels", FAIL, detail, fix, runner_id)


def _host_device_problems(ctx: Context) -> list[Check]:
    want = str(ctx.plan.host_interface)
    link = ctx.link(HOST_DEVICE)
    if link is not None and want in link.addresses and link.up:
        return []
    return [
        _tunnel_fail(
            f"{HOST_DEVICE} is missing, down or lacks {want}: containers cannot reach the host "
            f"at {ctx.plan.host_ip}",
            RECONCILE,
        )
    ]


def _bridge_problems(ctx: Context) -> list[Check]:
    bridge = ctx.settings.overlay_bridge_name
    link = ctx.link(bridge)
    if not ctx.runners:
        return []
    want = ctx.expected_interface(ctx.runners[0].runner_id)
    rid = ctx.runners[0].runner_id
    if link is None or link.kind != "bridge":
        return [_tunnel_fail(f"bridge {bridge} is missing", RECONCILE, rid)]
    problems = []
    if not link.up:
        problems.append(_tunnel_fail(f"bridge {bridge} is down", f"ip link set {bridge} up", rid))
    if str(want) not in link.addresses:
        problems.append(
            _tunnel_fail(
                f"bridge {bridge} lacks the gateway address {want}: containers lose their gateway",
                f"ip addr add {want} dev {bridge}",
                rid,
            )
        )
    tunnel = ctx.link(RUNNER_TUNNEL)
    if tunnel is not None and tunnel.master != bridge:
        problems.append(
            _tunnel_fail(
                f"{RUNNER_TUNNEL} is not a port of {bridge} (master: {tunnel.master})",
                f"ip link set {RUNNER_TUNNEL} master {bridge}",
                rid,
            )
        )
    return problems


def _orphan_tunnels(ctx: Context) -> list[Check]:
    known = {runner.runner_id for runner in ctx.runners}
    problems = []
    for name in ctx.in_natural_order(ctx.snapshot.links):
        runner_id = runner_id_from_tunnel(name)
        if runner_id is not None and runner_id not in known:
            problems.append(
                Check(
                    "tunnels",
                    WARN,
                    f"{name} exists but the record has no runner {runner_id}",
                    f"{RECONCILE} (adopts it as inactive), or remove it: ip link del {name}",
                    runner_id,
                )
            )
    return problems
