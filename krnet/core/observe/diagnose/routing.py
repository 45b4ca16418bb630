"""Checks of routing on this node: the overlay routes and reverse-path filtering on tunnels."""

from __future__ import annotations

from krnet.core.model.node_state import RouteInfo
from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Check, Context, passed


def check_routes(ctx: Context) -> list[Check]:
    """Host: each runner subnet via its vxkrN. Runner: the overlay network via the host."""
    if ctx.unread("kernel"):
        return []
    problems = []
    for runner in ctx.runners:
        addresses = ctx.addresses(runner.runner_id)
        if ctx.host:
            dst, gateway, dev = str(addresses.subnet), None, addresses.host_interface
            command = f"ip route replace {dst} dev {dev}"
        else:
            dst, gateway, dev = str(ctx.plan.network), str(addresses.host_ip_on_subnet), None
            command = f"ip route replace {dst} via {gateway}"
        if ctx.link(ctx.tunnel_name(runner.runner_id)) is None:
            continue  # the tunnels check already reports the missing link
        if not any(_route_matches(route, gateway, dev) for route in ctx.routes_to.get(dst, ())):
            problems.append(
                Check(
                    "routes",
                    FAIL,
                    f"no route to {dst} {'via ' + gateway if gateway else 'dev ' + str(dev)}",
                    command,
                    runner.runner_id,
                )
            )
    return passed("routes", problems, "every overlay route is in place")


def _route_matches(route: RouteInfo, gateway: str | None, dev: str | None) -> bool:
    return (gateway is None or route.gateway == gateway) and (dev is None or route.dev == dev)


def check_rp_filter(ctx: Context) -> list[Check]:
    """Strict reverse-path filtering on a tunnel drops replies that come back another way."""
    if ctx.unread("sysctl"):
        return []
    sysctls = ctx.snapshot.sysctls
    tunnels = ctx.in_natural_order(filter(ctx.is_krnet_tunnel, ctx.snapshot.links))
    all_value = _int(sysctls.get("net.ipv4.conf.all.rp_filter"))
    strict = [
        name
        for name in tunnels
        if max(all_value, _int(sysctls.get(f"net.ipv4.conf.{name}.rp_filter"))) == 1
    ]
    if not strict:
        return [Check("rp_filter", PASS, "no tunnel has strict rp_filter")]
    shown = ", ".join(strict[:5]) + (f" (+{len(strict) - 5} more)" if len(strict) > 5 else "")
    keys = ["all"] if all_value == 1 else strict[:5]
    command = "sysctl -w " + " ".join(f"net.ipv4.conf.{key}.rp_filter=2" for key in keys)
    return [
        Check(
            "rp_filter",
            WARN,
            f"strict rp_filter=1 on {shown}: replies on an asymmetric path are dropped",
            f"{command} (loose mode)",
        )
    ]


def _int(value: str | None) -> int:
    return int(value) if value and value.strip().isdigit() else 0
