"""Checks of the firewall: every rule krnet's firewall plan asks for, and the port guard.

The expected rules come from `krnet.core.dataplane.firewall.expected_rules`, the same function the
service converges on, so diagnosis and the data plane cannot disagree about what is right.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from krnet.core.dataplane import firewall
from krnet.core.dataplane.guardset import GUARD_SET
from krnet.core.model.node_state import RuleInfo
from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.observe.diagnose.check import FAIL, WARN, Check, Context, passed

RESTART = "or restart krnet serve (it re-applies every rule)"


def guard_peers(ctx: Context) -> tuple[str, ...]:
    """Who may send VXLAN here: every registered runner (host), or the host (runner)."""
    return ctx.once(_guard_peers)


def _guard_peers(ctx: Context) -> tuple[str, ...]:
    """Each address parsed once: at 4,095 runners parsing is most of this check's cost."""
    if ctx.host:
        candidates = [runner.physical_ip for runner in ctx.runners]
    else:
        tunnel = ctx.link(RUNNER_TUNNEL)
        remote = tunnel.vxlan.remote if tunnel and tunnel.vxlan else None
        candidates = [remote or ctx.settings.host_address or ""]
    numbers = {peer: _number(peer) for peer in set(candidates)}
    return tuple(sorted((peer for peer in numbers if numbers[peer] >= 0), key=numbers.__getitem__))


def address_key(text: str) -> tuple[int, str]:
    """Numeric order for addresses, text order for anything else."""
    number = _number(text)
    return (number, "") if number >= 0 else (2**32, text)


def _number(text: str) -> int:
    """The address as a number, or -1 for text that is not an IPv4 address."""
    try:
        return int(IPv4Address(text))
    except ValueError:
        return -1


def firewall_plan(ctx: Context) -> firewall.FirewallPlan:
    """The firewall plan this node's settings and record call for."""
    return ctx.once(_firewall_plan)


def _firewall_plan(ctx: Context) -> firewall.FirewallPlan:
    return firewall.FirewallPlan(
        mode=ctx.snapshot.mode,
        overlay_cidr=str(ctx.plan.network),
        vxlan_port=ctx.settings.overlay_vxlan_port,
        guard_enabled=ctx.settings.vxlan_port_guard,
        guard_peers=guard_peers(ctx),
    )


def expected_rules(ctx: Context) -> tuple[RuleInfo, ...]:
    """Every rule and jump this node's firewall plan asks for, as the data plane writes them."""
    return firewall.expected_rules(firewall_plan(ctx))


def guard_drops(ctx: Context) -> int:
    """Packets the VXLAN port guard dropped, from the snapshot's rule counters."""
    return firewall.guard_drops(ctx.snapshot.rules)


def rule_fix(rule: RuleInfo) -> str:
    """The iptables command that puts `rule` back."""
    parents = {parent for _table, parent in firewall.OWNED_CHAINS.values()}
    where = f"-I {rule.chain} 1" if rule.chain in parents else f"-A {rule.chain}"
    return f"iptables -t {rule.table} {where} {rule.spec}"


def check_firewall(ctx: Context) -> list[Check]:
    """Every rule and jump of the firewall plan is present."""
    if ctx.unread("firewall"):
        return []
    missing = firewall.missing_rules(firewall_plan(ctx), ctx.snapshot.rules)
    problems = [
        Check(
            "firewall",
            FAIL,
            f"missing {rule.table} {rule.chain} rule `{rule.spec}`: {_effect(rule)}",
            f"{rule_fix(rule)} {RESTART}",
        )
        for rule in missing
    ]
    count = len(expected_rules(ctx))
    return passed("firewall", problems, f"all {count} expected rules are present")


def _effect(rule: RuleInfo) -> str:
    if rule.chain == firewall.NAT_CHAIN or firewall.target(rule.spec) == firewall.NAT_CHAIN:
        return "containers cannot reach networks outside the overlay"
    if rule.chain == firewall.FORWARD_CHAIN or rule.spec.endswith(firewall.FORWARD_CHAIN):
        return "overlay traffic may be dropped by the FORWARD policy (Docker's is DROP)"
    return "VXLAN traffic on the overlay port is not handled as planned"


def check_port_guard(ctx: Context) -> list[Check]:
    """The guard's allow-list equals the registered runners (host) or the host (runner)."""
    if not ctx.settings.vxlan_port_guard:
        port = ctx.settings.overlay_vxlan_port
        return [
            Check(
                "port_guard",
                WARN,
                f"vxlan_port_guard is off: anyone who can reach UDP {port} can inject frames "
                "into the overlay",
                "set vxlan_port_guard = true in krnet.toml and restart krnet serve",
            )
        ]
    if ctx.unread("firewall"):
        return []
    want = set(guard_peers(ctx))
    have = set(ctx.snapshot.guard_allowlist)
    by_address = {runner.physical_ip: runner for runner in ctx.runners}
    problems = []
    for peer in sorted(want - have, key=address_key):
        runner = by_address.get(peer)
        who = ctx.runner_label(runner) if runner else f"the host {peer}"
        problems.append(
            Check(
                "port_guard",
                FAIL,
                f"{who} is not in the VXLAN port guard's allow-list: its tunnel traffic is dropped",
                f"ipset add {GUARD_SET} {peer} {RESTART}",
                runner.runner_id if runner else None,
            )
        )
    for peer in sorted(have - want, key=address_key):
        problems.append(
            Check(
                "port_guard",
                WARN,
                f"{peer} is allowed through the VXLAN port guard but is not a registered peer: "
                "it can inject frames into the overlay",
                f"ipset del {GUARD_SET} {peer} {RESTART}",
            )
        )
    dropped = guard_drops(ctx)
    return passed(
        "port_guard",
        problems,
        f"the allow-list holds exactly the {len(want)} peer(s); "
        f"{dropped} VXLAN packet(s) from other addresses dropped",
    )
