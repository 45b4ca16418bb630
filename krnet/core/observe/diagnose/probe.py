"""The hub's DF probe results judged: MTU black holes, blocked VXLAN ports, lossy paths."""

from __future__ import annotations

from krnet.core.model.node_state import ProbeResult
from krnet.core.model.plan import VXLAN_OVERHEAD
from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Check, Context, passed


def check_probes(ctx: Context) -> list[Check]:
    """The hub's DF probe: a black hole drops only full-size packets, a blocked port all."""
    problems = []
    for runner_id, probe in sorted(ctx.snapshot.probes.items()):
        problem = _probe_problem(ctx, runner_id, probe)
        if problem is not None:
            problems.append(problem)
    if not ctx.snapshot.probes:
        return [Check("probe", PASS, "no probe results (krnet doctor --probe sends them)")]
    return passed("probe", problems, "every tunnel carries full-size DF packets")


def _probe_problem(ctx: Context, runner_id: int, probe: ProbeResult) -> Check | None:
    """What a lost share of a tunnel's probes means: a black hole, a blocked port, or loss."""
    mtu, port = ctx.settings.overlay_mtu, ctx.settings.overlay_vxlan_port
    name = ctx.tunnel_name(runner_id)
    gateway = ctx.addresses(runner_id).gateway
    if probe.sent == 0 or probe.loss == 0:
        return None
    if probe.loss == 1 and probe.small_received > 0:
        return Check(
            "probe",
            FAIL,
            f"MTU black hole on {name}: small packets reach {gateway}, none at the full "
            f"overlay MTU {mtu} with DF set; the path carries less than {mtu + VXLAN_OVERHEAD}",
            f"set overlay_mtu to the path MTU minus {VXLAN_OVERHEAD} on the host and every "
            f"runner (test: ping -M do -s {mtu - 28} -I {name} {gateway})",
            runner_id,
        )
    if probe.loss == 1:
        return Check(
            "probe",
            FAIL,
            f"nothing passes {name} to {gateway}: UDP {port} is blocked between host and runner, "
            "or the runner is down",
            f"open UDP {port} on both ends (iptables -I INPUT -p udp --dport {port} -j ACCEPT, "
            "firewall-cmd --add-port, or the cloud security group)",
            runner_id,
        )
    return Check(
        "probe",
        WARN,
        f"{probe.loss:.0%} of full-size probes through {name} were lost",
        f"check the underlay between host and runner {runner_id} (ping -M do -s {mtu - 28} "
        f"-I {name} {gateway})",
        runner_id,
    )
