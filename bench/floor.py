"""The kernel floor of a join round: what the host's kernel does for N runners, done the
fastest way the kernel offers, in a fresh namespace of its own.

The same links, addresses and rules the host builds for runners 1..N: one `ip -batch` creates
every `vxkrN` (VXLAN, VNI, local, remote, port, learning off, MTU), gives it its address on the
runner's subnet (the kernel adds the route) and brings it up; one `iptables-restore --noflush`
adds the VXLAN port guard (an ACCEPT per runner address, then DROP) and its jump from INPUT.
bench/scale.py prints krnet's figures beside these, with the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from krnet.core.dataplane.firewall import GUARD_CHAIN
from krnet.core.model.plan import OverlayPlan
from krnet.lab.namespaces import Lab

HOST = "192.0.2.1"


@dataclass(frozen=True)
class Floor:
    """Seconds the kernel took, each step one command."""

    links: float  # ip -batch: links, addresses (and their routes), up
    rules: float  # iptables-restore --noflush: the guard


def link_batch(plan: OverlayPlan, claims: dict[int, str], port: int, mtu: int) -> str:
    """`ip -batch` input for the host's tunnels of these runners (id -> claimed address)."""
    lines = []
    for runner_id, remote in sorted(claims.items()):
        runner = plan.runner(runner_id)
        name = runner.host_interface
        lines += [
            f"link add {name} mtu {mtu} type vxlan id {runner.vni} local {HOST} remote {remote} "
            f"dstport {port} nolearning",
            f"address add {runner.host_ip_on_subnet}/{runner.subnet.prefixlen} dev {name}",
            f"link set {name} up",
        ]
    return "\n".join(lines) + "\n"


def guard_restore(claims: dict[int, str], port: int) -> str:
    """`iptables-restore --noflush` input for the guard of these runners."""
    udp = f"-p udp -m udp --dport {port}"
    rules = [f"-A {GUARD_CHAIN} -s {remote}/32 {udp} -j ACCEPT" for remote in claims.values()]
    body = [f":{GUARD_CHAIN} - [0:0]", *rules, f"-A {GUARD_CHAIN} {udp} -j DROP"]
    return "\n".join(["*filter", *body, f"-A INPUT {udp} -j {GUARD_CHAIN}", "COMMIT", ""])


def measure_floor(plan: OverlayPlan, claims: dict[int, str], port: int, mtu: int) -> Floor:
    """Build it all in a fresh lab namespace (deleted afterwards); each step's wall time."""
    with Lab() as lab:
        node = lab.add_node("floor", f"{HOST}/24")
        links = _timed(
            lambda: node.run(["ip", "-batch", "-"], input=link_batch(plan, claims, port, mtu))
        )
        rules = _timed(
            lambda: node.run(["iptables-restore", "--noflush"], input=guard_restore(claims, port))
        )
    return Floor(links, rules)


def _timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started
