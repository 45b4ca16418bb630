"""Proofs with real packets on a lab cluster; each returns a one-line detail or raises.

Shared by `krnet demo` (which prints them step by step) and the lab tests (which assert on them),
so the demo shows exactly what the tests prove.
"""

from __future__ import annotations

import json
import re

from krnet.lab.cluster import INTERNET_ADDRESS, Cluster, runner_underlay
from krnet.lab.processes import ClusterNode

OVERLAY_NETWORK = "kohakuriver-overlay"
HOST_OVERLAY_IP = "10.0.0.1"


class ProofFailed(AssertionError):
    """What the network did differs from what the reference promises."""


def runners_joined(cluster: Cluster) -> str:
    cluster.wait_for_runners()
    status = cluster.status()
    return ", ".join(
        f"{runner['hostname']} -> id {runner['runner_id']} ({runner['subnet']})"
        for runner in status["runners"]
    )


def link_details(node: ClusterNode, name: str) -> dict[str, object]:
    """`ip -d -j link show NAME` in `node`'s namespace, parsed."""
    result = node.node.run(["ip", "-d", "-j", "link", "show", name], check=False)
    if result.returncode != 0:
        raise ProofFailed(f"{name} is missing on {node.name}: {result.stderr.strip()}")
    details: list[dict[str, object]] = json.loads(result.stdout)
    return details[0]


def host_tunnels(cluster: Cluster) -> str:
    details = []
    for index in range(1, cluster.runners + 1):
        link = link_details(cluster.host, f"vxkr{index}")
        data = link["linkinfo"]["info_data"]  # type: ignore[index]
        if data["id"] != 100 + index or data["remote"] != runner_underlay(index):
            raise ProofFailed(f"vxkr{index} has VNI {data['id']} remote {data['remote']}")
        details.append(f"vxkr{index} VNI {data['id']} -> {data['remote']}")
    return "; ".join(details)


def start_containers(cluster: Cluster) -> str:
    addresses = [
        cluster.run_container(runner, f"c{index}")
        for index, runner in enumerate(cluster.nodes, start=1)
    ]
    for index, address in enumerate(addresses, start=1):
        if not address.startswith(f"10.{index}."):
            raise ProofFailed(f"container c{index} got {address}, outside 10.{index}.0.0/16")
    return ", ".join(f"c{i} {a}" for i, a in enumerate(addresses, start=1))


def ping(cluster: Cluster, runner: ClusterNode, container: str, target: str) -> str:
    """Ping from a container (busybox); the summary line, or ProofFailed."""
    result = cluster.container(runner, container, "ping", "-c", "3", "-W", "2", target)
    summary = _ping_summary(result.stdout)
    if result.returncode != 0:
        raise ProofFailed(f"{container} cannot reach {target}: {summary or result.stderr.strip()}")
    return f"{target}: {summary}"


def cross_runner(cluster: Cluster) -> str:
    target = cluster.containers["c2"]
    return ping(cluster, cluster.nodes[0], "c1", target)


def container_to_host(cluster: Cluster) -> str:
    return ping(cluster, cluster.nodes[0], "c1", HOST_OVERLAY_IP)


def runner_reaches_host(cluster: Cluster) -> str:
    result = cluster.nodes[0].node.run(["ping", "-c", "3", "-W", "2", HOST_OVERLAY_IP], check=False)
    if result.returncode != 0:
        raise ProofFailed(f"runner 1 cannot reach {HOST_OVERLAY_IP}: {result.stdout[-200:]}")
    return _ping_summary(result.stdout)


def container_pid(cluster: Cluster, runner: ClusterNode, container: str) -> int:
    return int(cluster.docker(runner, "inspect", "-f", "{{.State.Pid}}", container).strip())


def df_ping(cluster: Cluster, runner: ClusterNode, container: str, target: str, size: int) -> bool:
    """A DF ping of `size` payload bytes from inside a container's namespace (iputils ping)."""
    pid = container_pid(cluster, runner, container)
    result = runner.node.run(
        [
            "nsenter",
            "-t",
            str(pid),
            "-n",
            "ping",
            "-M",
            "do",
            "-s",
            str(size),
            "-c",
            "2",
            "-W",
            "2",
            target,
        ],
        check=False,
    )
    return result.returncode == 0


def full_mtu(cluster: Cluster) -> str:
    """MTU-28 bytes of ICMP payload with DF fit exactly; one byte more must not."""
    mtu = int(cluster.status()["mtu"])
    target = cluster.containers["c2"]
    runner = cluster.nodes[0]
    if not df_ping(cluster, runner, "c1", target, mtu - 28):
        raise ProofFailed(f"a {mtu}-byte DF packet from c1 to {target} was lost")
    if df_ping(cluster, runner, "c1", target, mtu - 27):
        raise ProofFailed(f"a {mtu + 1}-byte DF packet passed a {mtu}-byte overlay")
    return f"{mtu} bytes pass with DF, {mtu + 1} refused"


def nat(cluster: Cluster) -> str:
    """c1 reaches the internet node, which sees runner 1's underlay address as the source."""
    runner = cluster.nodes[0]
    source = runner_underlay(1)
    counter = ["INPUT", "-s", source, "-p", "icmp", "-j", "ACCEPT"]
    if cluster.internet.run(["iptables", "-w", "-C", *counter], check=False).returncode != 0:
        cluster.internet.run(["iptables", "-w", "-A", *counter])
    before = _counter(cluster, source)
    detail = ping(cluster, runner, "c1", INTERNET_ADDRESS)
    seen = _counter(cluster, source) - before
    if seen < 3:
        raise ProofFailed(f"the internet saw {seen} packets from {source}, expected 3")
    return f"{detail}; seen from {source}"


def _counter(cluster: Cluster, source: str) -> int:
    output = cluster.internet.run(["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]).stdout
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[2] == "ACCEPT" and fields[7] == source:
            return int(fields[0])
    return 0


def _ping_summary(output: str) -> str:
    match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", output)
    if not match:
        return ""
    return f"{match.group(2)}/{match.group(1)} received" + (
        f", avg {rtt.group(1)} ms" if rtt else ""
    )
