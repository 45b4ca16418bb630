"""Checks of the MTU chain: the underlay fits overlay_mtu + VXLAN, every overlay link is at it."""

from __future__ import annotations

from krnet.core.model.plan import VXLAN_OVERHEAD
from krnet.core.model.records import RunnerRecord
from krnet.core.observe.diagnose.check import FAIL, PASS, RECONCILE, WARN, Check, Context, passed
from krnet.core.observe.diagnose.far_end import judge_far_end


def check_underlay_mtu(ctx: Context) -> list[Check]:
    """overlay_mtu + 50 bytes of VXLAN must fit the underlay link's MTU."""
    if ctx.unread("kernel"):
        return []
    mtu, underlay = ctx.settings.overlay_mtu, ctx.snapshot.underlay_mtu
    link = ctx.snapshot.underlay_link or "the underlay link"
    if underlay is None:
        return [
            Check(
                "underlay_mtu",
                WARN,
                "the underlay link is unknown: cannot check that overlay_mtu + 50 fits",
                "set host_reachable_address (host) or runner_address (runner) to this node's "
                "LAN address",
            )
        ]
    if mtu + VXLAN_OVERHEAD > underlay:
        return [
            Check(
                "underlay_mtu",
                FAIL,
                f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} bytes of VXLAN = {mtu + VXLAN_OVERHEAD} "
                f"exceeds {link}'s MTU {underlay}: full-size packets vanish (MTU black hole)",
                f"set overlay_mtu = {underlay - VXLAN_OVERHEAD} on the host and every runner, "
                f"or raise {link}'s MTU to {mtu + VXLAN_OVERHEAD}",
            )
        ]
    detail = f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} fits {link}'s MTU {underlay}"
    return [Check("underlay_mtu", PASS, detail)]


def check_link_mtu(ctx: Context) -> list[Check]:
    """Every tunnel, the bridge, the Docker network and the runners' ends at overlay_mtu."""
    if ctx.unread("kernel"):
        return []
    mtu = ctx.settings.overlay_mtu
    problems = [found for runner in ctx.runners for found in _tunnel_mtu_problems(ctx, runner)]
    if not ctx.host and ctx.runners:
        rid = ctx.runners[0].runner_id
        bridge = ctx.link(ctx.settings.overlay_bridge_name)
        if bridge is not None and bridge.mtu != mtu:
            problems.append(_link_mtu_problem(bridge.name, bridge.mtu, mtu, rid))
        problems += _docker_mtu_problems(ctx, rid)
    return passed("link_mtu", problems, f"every overlay link is at overlay_mtu {mtu}")


def _tunnel_mtu_problems(ctx: Context, runner: RunnerRecord) -> list[Check]:
    """The runner's tunnel on this node, and (on a host) the MTUs the runner reports."""
    mtu, link = ctx.settings.overlay_mtu, ctx.link(ctx.tunnel_name(runner.runner_id))
    problems = []
    if link is not None and link.mtu != mtu:
        problems.append(_link_mtu_problem(link.name, link.mtu, mtu, runner.runner_id))
    return problems + (_far_end_mtu_problems(ctx, runner) if ctx.host else [])


def _far_end_mtu_problems(ctx: Context, runner: RunnerRecord) -> list[Check]:
    """The MTUs the runner reports on its vxlan0 and bridge, where they are not overlay_mtu."""
    end, mtu = judge_far_end(runner, ctx.settings), ctx.settings.overlay_mtu
    found = [end.difference("mtu"), end.difference("bridge_mtu")]
    return [
        Check(
            "link_mtu",
            FAIL,
            f"runner {runner.runner_id} ({runner.hostname}) reports MTU {diff.reported} on "
            f"{diff.link}, expected {mtu}: packets between {diff.reported} and {mtu} bytes are "
            "dropped",
            f"on {runner.hostname}: ip link set dev {diff.link} mtu {mtu} "
            "(its agent's reconcile does this too)",
            runner.runner_id,
        )
        for diff in found
        if diff is not None
    ]


def _link_mtu_problem(name: str, actual: int, mtu: int, rid: int) -> Check:
    effect = (
        f"packets above {actual} bytes are dropped or fragmented"
        if actual < mtu
        else f"the far end (MTU {mtu}) drops packets above {mtu} bytes"
    )
    return Check(
        "link_mtu",
        FAIL,
        f"{name} has MTU {actual}, expected {mtu} (overlay_mtu): {effect}",
        f"ip link set dev {name} mtu {mtu} (krnet serve's reconcile does this too)",
        rid,
    )


def _docker_mtu_problems(ctx: Context, rid: int) -> list[Check]:
    docker = ctx.snapshot.docker
    name = ctx.settings.overlay_network_name
    network = next((n for n in docker.networks if n.name == name), None) if docker else None
    mtu = ctx.settings.overlay_mtu
    if network is None or network.mtu == mtu:
        return []
    actual = network.mtu if network.mtu is not None else "unset (Docker's 1500)"
    return [
        Check(
            "link_mtu",
            FAIL,
            f"Docker network {name} has MTU {actual}, expected {mtu}: containers send frames "
            "the tunnel cannot carry",
            f"docker network rm {name} (after stopping its containers); then {RECONCILE}",
            rid,
        )
    ]
