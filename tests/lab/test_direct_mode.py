"""Direct mode end to end: a host with overlay_mode = "direct", three runners with real dockerd.

Runners follow the host's mode (none of them sets it). Container traffic between runners goes
VTEP to VTEP: the host never sees it (a counting rule in its raw table stays at zero), and it
keeps flowing while the host is stopped with every vxkrN deleted. One cluster for the module;
each test leaves it as it found it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from krnet.lab import proofs
from krnet.lab.cluster import Cluster, runner_underlay
from krnet.lab.processes import ClusterNode
from tests.lab.test_cluster import continuous_ping, received
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

BOUND = 60.0  # a generous bound for a change to show, never a measured figure


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox")
    with Cluster(tmp_path_factory.mktemp("direct"), runners=3) as built:
        built.write_config(built.host, overlay_mode="direct")
        built.start_all()
        built.wait_for_runners()
        for index, runner in enumerate(built.nodes[:2], start=1):
            built.run_container(runner, f"c{index}")
        for runner in built.nodes:
            built.wait_until(f"{runner.name}'s direct routes", lambda r=runner: others_routed(r))
        yield built


def direct_routes(runner: ClusterNode) -> set[str]:
    """The runner's routes through its VTEP (one /16 per other runner on its direct path)."""
    routes = json.loads(runner.node.run(["ip", "-j", "route", "show", "dev", "vxkrd"]).stdout)
    return {route["dst"] for route in routes if route.get("dst", "").endswith("/16")}


def others_routed(runner: ClusterNode, runners: int = 3) -> bool:
    own = int(runner.name[1:])
    return direct_routes(runner) == {f"10.{i}.0.0/16" for i in range(1, runners + 1) if i != own}


class HostSeen:
    """Counts, in the host's raw table, packets from container c1 to container c2."""

    def __init__(self, cluster: Cluster) -> None:
        self.host = cluster.host.node
        self.rule = ["PREROUTING", "-s", cluster.containers["c1"], "-d", cluster.containers["c2"]]

    def __enter__(self) -> HostSeen:
        self.host.run(["iptables", "-w", "-t", "raw", "-I", *self.rule])
        return self

    def __exit__(self, *_: object) -> None:
        self.host.run(["iptables", "-w", "-t", "raw", "-D", *self.rule])

    @property
    def packets(self) -> int:
        listed = self.host.run(
            ["iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"]
        )
        source = self.rule[2]
        rows = [line.split() for line in listed.stdout.splitlines()]
        return sum(int(row[0]) for row in rows if len(row) >= 8 and source in row)


def paths(cluster: Cluster, runner: ClusterNode) -> dict[int, str]:
    """What the runner's `node overlay --json` says of each pair: direct or hub."""
    [own] = cluster.status(runner)["runners"]
    return {pair["runner_id"]: pair["path"] for pair in own.get("direct_peers", [])}


def path(cluster: Cluster, runner: ClusterNode, other: int) -> str | None:
    return paths(cluster, runner).get(other)


def test_runners_follow_the_hosts_mode_and_show_their_paths(cluster: Cluster) -> None:
    assert cluster.status()["overlay_mode"] == "direct"
    one = cluster.nodes[0]
    assert cluster.status(one)["overlay_mode"] == "direct"
    cluster.wait_until(
        "runner 1 to report its paths", lambda: paths(cluster, one) == {2: "direct", 3: "direct"}
    )
    doctor = json.loads(cluster.krnet(cluster.host, "doctor", "--json", check=False))
    [check] = [c for c in doctor if c["check"] == "direct_paths"]
    assert check["status"] == "pass"


def test_container_traffic_between_runners_skips_the_host(cluster: Cluster) -> None:
    with HostSeen(cluster) as seen:
        proofs.ping(cluster, cluster.nodes[0], "c1", cluster.containers["c2"])
        proofs.full_mtu(cluster)
        assert seen.packets == 0


def test_the_host_and_the_internet_are_still_reached_through_the_hub(cluster: Cluster) -> None:
    proofs.ping(cluster, cluster.nodes[0], "c1", "10.0.0.1")
    proofs.nat(cluster)


def test_traffic_flows_while_the_host_is_down_and_its_tunnels_gone(cluster: Cluster) -> None:
    pinger = continuous_ping(cluster, 40)
    time.sleep(1)
    assert cluster.stop(cluster.host) == 0
    for index in range(1, 4):
        cluster.host.node.run(["ip", "link", "del", f"vxkr{index}"])
    time.sleep(3)
    routes = [direct_routes(runner) for runner in cluster.nodes]
    cluster.start(cluster.host)
    output, _ = pinger.communicate(timeout=60)
    assert received(output) == (40, 40), output
    cluster.wait_for_runners()
    assert [direct_routes(runner) for runner in cluster.nodes] == routes  # nothing flapped


def test_a_runner_that_leaves_and_joins_again_is_learnt_by_the_others(cluster: Cluster) -> None:
    three, others = cluster.nodes[2], cluster.nodes[:2]
    assert cluster.stop(three) == 0
    said = cluster.krnet(three, "cleanup", "--yes")
    assert "left the host" in said, said
    for runner in others:
        cluster.wait_until(f"{runner.name} to drop runner 3", lambda r=runner: others_routed(r, 2))
    cluster.start(three)
    cluster.wait_for_runners()
    for runner in cluster.nodes:
        cluster.wait_until(f"{runner.name} to learn runner 3", lambda r=runner: others_routed(r))


def test_a_blocked_pair_falls_back_to_the_hub_and_comes_back(cluster: Cluster) -> None:
    one, two = cluster.nodes[0], cluster.nodes[1]
    block = ["PREROUTING", "-s", runner_underlay(2), "-p", "udp", "--dport", "4789", "-j", "DROP"]
    one.node.run(["iptables", "-w", "-t", "raw", "-I", *block])
    try:
        cluster.wait_until(
            "the pair on the hub", lambda: paths(cluster, one).get(2) == "hub", BOUND
        )
        cluster.wait_until(
            "both ends on the hub", lambda: paths(cluster, two).get(1) == "hub", BOUND
        )
        with HostSeen(cluster) as seen:
            proofs.ping(cluster, one, "c1", cluster.containers["c2"])
            assert seen.packets >= 3  # through the host now
        doctor = json.loads(cluster.krnet(cluster.host, "doctor", "--json", check=False))
        [warning] = [c for c in doctor if c["check"] == "direct_paths"]
        assert warning["status"] == "warn" and "runners 1 (" in warning["detail"]
    finally:
        one.node.run(["iptables", "-w", "-t", "raw", "-D", *block])
    cluster.wait_until(
        "the pair direct again", lambda: paths(cluster, one).get(2) == "direct", BOUND
    )
    with HostSeen(cluster) as seen:
        proofs.ping(cluster, one, "c1", cluster.containers["c2"])
        assert seen.packets == 0
