"""A lab cluster with a real firewalld on the host and every runner, proven with packets.

Each node's firewalld runs in the node's own mount namespace (private D-Bus, /etc/firewalld
from the lab), its default zone (public) on the underlay link eth0, and krnet serve runs in
that mount namespace too (krnet.lab.firewalld). The lab opens the host's join port, as
docs/firewall.md asks of an operator; everything else is krnet's doing. The tests run in file
order: the last one cleans up and compares the zones with how they were before krnet started.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from krnet.lab import proofs
from krnet.lab.cluster import HOST_UNDERLAY, Cluster, ClusterNode, runner_underlay
from krnet.lab.firewalld import TOOLS
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

RULE = 'rule family="ipv4" source address="{}" port port="4789" protocol="udp" accept'
LAB_TOOLS = ("ip", "nsenter", "unshare", "iptables", "nft", "dockerd", "docker", "busybox")
ZONES_BEFORE: dict[str, str] = {}  # node name -> `--list-all-zones` before krnet started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged(*LAB_TOOLS, *TOOLS)
    with Cluster(tmp_path_factory.mktemp("fwd"), runners=2, with_firewalld=True) as built:
        ZONES_BEFORE.update({node.name: zones(built, node) for node in nodes(built)})
        built.start_all()
        built.wait_for_runners()
        for index, runner in enumerate(built.nodes, start=1):
            built.run_container(runner, f"c{index}")
        yield built


def nodes(cluster: Cluster) -> list[ClusterNode]:
    return [cluster.host, *cluster.nodes]


def fw(cluster: Cluster, node: ClusterNode, *args: str) -> str:
    return cluster.firewalls[node.name].cmd(*args)


def zones(cluster: Cluster, node: ClusterNode) -> str:
    return fw(cluster, node, "--list-all-zones")


def trusted(cluster: Cluster, node: ClusterNode) -> set[str]:
    return set(fw(cluster, node, "--zone=trusted", "--list-interfaces").split())


def rich_rules(cluster: Cluster, node: ClusterNode) -> set[str]:
    listed = fw(cluster, node, "--zone=public", "--list-rich-rules").splitlines()
    return {line for line in listed if line.strip()}


def test_firewalld_filters_each_node_and_not_this_machine(cluster: Cluster) -> None:
    for node in nodes(cluster):
        assert fw(cluster, node, "--state").strip() == "running"
        assert fw(cluster, node, "--get-zone-of-interface=eth0").strip() == "public"
        tables = node.node.run(["nft", "list", "tables"]).stdout
        assert "table inet firewalld" in tables
    here = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    assert "firewalld" not in here.stdout


def test_krnet_interfaces_are_in_the_trusted_zone_at_runtime_only(cluster: Cluster) -> None:
    assert trusted(cluster, cluster.host) == {"vxkr1", "vxkr2"}
    for runner in cluster.nodes:
        assert trusted(cluster, runner) == {"kohaku-overlay", "vxlan0"}
    for node in nodes(cluster):
        assert fw(cluster, node, "--permanent", "--zone=trusted", "--list-interfaces").split() == []


def test_vxlan_is_accepted_from_the_members_only(cluster: Cluster) -> None:
    members = {RULE.format(runner_underlay(1)), RULE.format(runner_underlay(2))}
    assert rich_rules(cluster, cluster.host) == members
    for runner in cluster.nodes:
        assert rich_rules(cluster, runner) == {RULE.format(HOST_UNDERLAY)}
    for node in nodes(cluster):
        assert fw(cluster, node, "--permanent", "--zone=public", "--list-rich-rules").strip() == ""
        assert "4789/udp" not in fw(cluster, node, "--zone=public", "--list-ports")


def test_container_traffic_passes_every_path(cluster: Cluster) -> None:
    assert "3/3 received" in proofs.cross_runner(cluster)
    assert "3/3 received" in proofs.container_to_host(cluster)
    assert "3/3 received" in proofs.runner_reaches_host(cluster)
    proofs.full_mtu(cluster)
    assert "seen from" in proofs.nat(cluster)


def test_without_the_rule_firewalld_drops_vxlan_and_krnet_puts_it_back(cluster: Cluster) -> None:
    """The rich rule is what carries the overlay: taken out by hand (krnet stopped, so no
    reconcile pass interferes), the runner's firewalld rejects the host's VXLAN packets; krnet's
    start adds it again."""
    runner = cluster.nodes[0]
    cluster.stop(runner)
    fw(cluster, runner, "--zone=public", f"--remove-rich-rule={RULE.format(HOST_UNDERLAY)}")
    lost = cluster.container(runner, "c1", "ping", "-c", "2", "-W", "1", proofs.HOST_OVERLAY_IP)
    assert lost.returncode != 0, lost.stdout
    cluster.start(runner)
    cluster.wait_until(
        "krnet to accept VXLAN from the host again",
        lambda: rich_rules(cluster, runner) == {RULE.format(HOST_UNDERLAY)},
        timeout=30,
    )
    assert "3/3 received" in proofs.container_to_host(cluster)


def test_a_restart_after_a_firewalld_reload_reapplies(cluster: Cluster) -> None:
    """A reload drops the runtime configuration; krnet serve's start puts it back."""
    for node in nodes(cluster):
        cluster.stop(node)
        fw(cluster, node, "--reload")
    assert trusted(cluster, cluster.host) == set()
    assert rich_rules(cluster, cluster.host) == set()
    for node in nodes(cluster):
        cluster.start(node)
    cluster.wait_until(
        "the host's tunnels trusted", lambda: trusted(cluster, cluster.host) == {"vxkr1", "vxkr2"}
    )
    cluster.wait_until(
        "the runners' links trusted",
        lambda: all(trusted(cluster, r) == {"kohaku-overlay", "vxlan0"} for r in cluster.nodes),
    )
    cluster.wait_until(
        "VXLAN accepted from both runners", lambda: len(rich_rules(cluster, cluster.host)) == 2
    )
    cluster.wait_for_runners()
    cluster.wait_until("c1 to reach c2", lambda: "3/3" in proofs.cross_runner(cluster))


def test_cleanup_leaves_the_zones_as_they_were(cluster: Cluster) -> None:
    for index, runner in enumerate(cluster.nodes, start=1):
        cluster.docker(runner, "rm", "-f", f"c{index}")
    for node in nodes(cluster):
        cluster.stop(node)
        cluster.krnet(node, "cleanup", "--yes")
    for node in nodes(cluster):
        after = zones(cluster, node)
        assert after == ZONES_BEFORE[node.name]
        assert not re.search(r"vxkr|vxlan0|kohaku-overlay|4789", after)
