"""Checks of the VNI map: VNI = overlay_vxlan_id + runner id everywhere, each VNI used once."""

from __future__ import annotations

from collections import defaultdict

from krnet.core.model.node_state import LinkInfo
from krnet.core.model.plan import RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.core.model.records import RunnerRecord
from krnet.core.observe.diagnose.check import FAIL, RECONCILE, WARN, Check, Context, passed


def check_vni_map(ctx: Context) -> list[Check]:
    """VNI = base + runner id on both ends; no VNI twice; no foreign VXLAN link on our port."""
    if ctx.unread("kernel"):
        return []
    problems = []
    base = ctx.settings.overlay_vxlan_id
    for runner in ctx.runners:
        rid, want = runner.runner_id, ctx.plan.vni(runner.runner_id)
        name = ctx.tunnel_name(rid)
        link = ctx.link(name)
        found = {
            f"{name} on this node": link.vxlan.vni if link and link.vxlan else None,
            "the record": runner.vni,
            "the runner's heartbeat": runner.report.vni if ctx.host else None,
        }
        for where, vni in found.items():
            if vni is not None and vni != want:
                problems.append(
                    Check(
                        "vni_map",
                        FAIL,
                        f"{where} has VNI {vni} for runner {rid}; expected {want} "
                        f"(overlay_vxlan_id {base} + {rid}): frames are dropped",
                        _vni_fix(ctx, runner, where, want),
                        rid,
                    )
                )
    problems += _shared_vnis(ctx) + _foreign_links(ctx)
    return passed("vni_map", problems, f"every VNI is {base} + runner id, each used once")


def _vni_fix(ctx: Context, runner: RunnerRecord, where: str, want: int) -> str:
    if where.startswith("the runner"):
        return (
            f"set overlay_vxlan_id = {ctx.settings.overlay_vxlan_id} on {runner.hostname} "
            "and restart its agent"
        )
    if where == "the record":
        return f"overlay_vxlan_id changed since runner {runner.runner_id} joined: restart its agent"
    return f"ip link del {ctx.tunnel_name(runner.runner_id)}; then {RECONCILE} (VNI {want})"


def _vxlan_links(ctx: Context) -> list[LinkInfo]:
    return [link for link in ctx.snapshot.links.values() if link.vxlan is not None]


def _shared_vnis(ctx: Context) -> list[Check]:
    users: dict[tuple[int, int], list[str]] = defaultdict(list)
    for link in _vxlan_links(ctx):
        assert link.vxlan is not None
        users[(link.vxlan.port, link.vxlan.vni)].append(link.name)
    problems = []
    for (port, vni), names in sorted(users.items()):
        if len(names) < 2:
            continue
        names = ctx.in_natural_order(names)
        wrong = [name for name in names if _planned_vni(ctx, name) != vni] or names[1:]
        problems.append(
            Check(
                "vni_map",
                FAIL,
                f"VNI {vni} on port {port} is used by {', '.join(names)}: frames reach only one",
                "; ".join(f"ip link del {name}" for name in wrong) + f"; then {RECONCILE}",
                _runner_of(wrong),
            )
        )
    return problems


def _planned_vni(ctx: Context, name: str) -> int | None:
    """The VNI krnet's plan gives a link of this name, or None for a link krnet did not name."""
    if ctx.host:
        runner_id = runner_id_from_tunnel(name)
        return ctx.plan.vni(runner_id) if runner_id and runner_id <= ctx.plan.max_runners else None
    return ctx.runners[0].vni if name == RUNNER_TUNNEL and ctx.runners else None


def _foreign_links(ctx: Context) -> list[Check]:
    port = ctx.settings.overlay_vxlan_port
    ours = range(ctx.plan.vni(1), ctx.plan.vni(ctx.plan.max_runners) + 1)
    problems = []
    for link in _vxlan_links(ctx):
        assert link.vxlan is not None
        if ctx.is_krnet_tunnel(link.name) or link.vxlan.port != port:
            continue
        clash = link.vxlan.vni in ours
        problems.append(
            Check(
                "vni_map",
                FAIL if clash else WARN,
                f"foreign VXLAN link {link.name} (VNI {link.vxlan.vni}) shares UDP port {port}"
                + (" and krnet's VNI range" if clash else ""),
                f"move it to another port or remove it: ip link del {link.name}",
            )
        )
    return problems


def _runner_of(names: list[str]) -> int | None:
    ids = [runner_id_from_tunnel(name) for name in names]
    return next((rid for rid in ids if rid is not None), None)
