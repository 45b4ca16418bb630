"""What a runner says about itself is true (issue 12): real host and runners, real dockerds.

A runner judged by the allocation it holds (the host's custom scheme it does not repeat); the
network containers should use in every fallback (host unreachable, set-up failed, overlay off);
a runner refused after its id was reclaimed gives up the addressing that is another's now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from krnet.lab import proofs
from krnet.lab.cluster import Cluster, ClusterNode
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

TOOLS = ("ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox")


def own_status(cluster: Cluster, runner: ClusterNode) -> dict[str, Any]:
    return cluster.status(runner)


def doctor(cluster: Cluster, node: ClusterNode, *, passes: bool) -> dict[str, list[dict[str, str]]]:
    """`krnet doctor --json` on `node` (exit 0 required when it `passes`): checks by name."""
    checks: dict[str, list[dict[str, str]]] = {}
    for check in json.loads(cluster.krnet(node, "doctor", "--json", check=passes)):
        checks.setdefault(check["check"], []).append(check)
    return checks


def links(node: ClusterNode) -> set[str]:
    listed = json.loads(node.node.run(["ip", "-j", "link"]).stdout)
    return {link["ifname"] for link in listed}


def reason_holds(cluster: Cluster, runner: ClusterNode, text: str) -> bool:
    return text in str(own_status(cluster, runner).get("network_reason"))


def test_a_runner_without_the_scheme_keys_runs_by_the_hosts_allocation(tmp_path: Path) -> None:
    # Regression (issue 12, item 1): on ccbb48d this runner said host_overlay_ip 10.0.0.1/8 with
    # a false subnet mismatch, and doctor failed eight false checks and exited 1.
    require_privileged(*TOOLS)
    with Cluster(tmp_path / "c", runners=1) as cluster:
        cluster.write_config(cluster.host, overlay_host_ip="172.16.0.1", overlay_host_prefix=12)
        cluster.start_all()
        cluster.wait_for_runners()
        [runner] = cluster.nodes
        cluster.run_container(runner, "c1")
        proofs.ping(cluster, runner, "c1", "172.16.0.1")  # the data path, as before

        status = own_status(cluster, runner)
        assert status["host_overlay_ip"] == "172.16.0.1/12"
        [own] = status["runners"]
        assert (own["subnet"], own["gateway"], own["mismatches"]) == (
            "172.17.0.0/16",
            "172.17.0.1",
            [],
        )
        assert (status["network"], status["gateway"], status["network_reason"]) == (
            "kohakuriver-overlay",
            "172.17.0.1",
            None,
        )
        assert "Containers use: kohakuriver-overlay, gateway 172.17.0.1" in cluster.krnet(
            runner, "node", "overlay"
        )

        checks = doctor(cluster, runner, passes=True)  # exit 0
        failed = [c for group in checks.values() for c in group if c["status"] == "fail"]
        assert failed == []
        [scheme] = checks["allocation_scheme"]
        assert scheme["status"] == "warn"
        assert "overlay_host_ip 10.0.0.1" in scheme["detail"]
        assert "overlay_host_ip 172.16.0.1" in scheme["detail"]
        # the default fallback subnet 172.30.0.0/16 is runner 14's block of the host's scheme
        [subnet] = checks["docker_subnet"]
        assert subnet["status"] == "warn" and "172.16.0.0/12" in subnet["detail"]


def test_every_fallback_says_kohakuriver_net_and_why(tmp_path: Path) -> None:
    # Regression (issue 12, items 4 and 5): on ccbb48d each of these had `runners: []` and no
    # `network`, and the set-up failure was logged again on every heartbeat.
    require_privileged(*TOOLS)
    with Cluster(tmp_path / "c", runners=1) as cluster:
        [runner] = cluster.nodes
        cluster.start(runner)  # the host is not running: unreachable
        cluster.wait_until(
            "the runner to say the host is unreachable",
            lambda: reason_holds(cluster, runner, "host unreachable"),
        )
        status = own_status(cluster, runner)
        assert (status["network"], status["gateway"]) == ("kohakuriver-net", "172.30.0.1")
        assert "Containers use: kohakuriver-net" in cluster.krnet(runner, "node", "overlay")

        # a leftover VXLAN link holds the VNI this runner is given: the set-up fails
        runner.node.run(
            ["ip", "link", "add", "vx-old", "type", "vxlan", "id", "101", "dstport", "4789"]
        )
        cluster.start(cluster.host)
        cluster.wait_until(
            "the runner to say the set-up failed",
            lambda: reason_holds(cluster, runner, "set-up failed"),
        )
        assert own_status(cluster, runner)["network"] == "kohakuriver-net"
        [setup] = doctor(cluster, runner, passes=False)["overlay_setup"]
        assert setup["status"] == "fail" and "ip -d link" in setup["detail"]
        cluster.wait_until(  # the host sends the allocation again on every heartbeat
            "several heartbeats",
            lambda: runner.log.read_text().count("allocation again; applying it") >= 4,
        )
        log = runner.log.read_text()
        assert log.count("could not apply the allocation") == 1, log
        assert log.count("reconcile failed") <= 1, log

        runner.node.run(["ip", "link", "del", "vx-old"])
        cluster.wait_until(
            "the overlay to come up", lambda: own_status(cluster, runner)["network_reason"] is None
        )
        assert own_status(cluster, runner)["network"] == "kohakuriver-overlay"

        cluster.stop(runner)
        cluster.write_config(runner, overlay_enabled=False)
        status = own_status(cluster, runner)
        assert (status["network"], status["network_reason"]) == (
            "kohakuriver-net",
            "overlay_enabled is false",
        )


def test_a_runner_refused_after_its_id_was_reclaimed_gives_up_its_addressing(
    tmp_path: Path,
) -> None:
    # Regression (issue 12, item 3): on ccbb48d the refused runner kept kohaku-overlay with the
    # old gateway and vxlan0 with the VNI that now belongs to the runner that took its id.
    require_privileged(*TOOLS)
    with Cluster(tmp_path / "c", runners=2) as cluster:
        # a pool of one id: 10.0.0.0/8 cut into /9 blocks, block 0 the host's
        cluster.write_config(cluster.host, overlay_runner_prefix=9)
        first, second = cluster.nodes
        cluster.start(cluster.host)
        cluster.start(first)
        cluster.wait_until(
            "the first runner on the overlay",
            lambda: (
                [r["network"] for r in own_status(cluster, first)["runners"]]
                == ["kohakuriver-overlay"]
                and "kohakuriver-overlay" in cluster.docker(first, "network", "ls")
            ),
        )
        cluster.run_container(first, "c1")
        cluster.stop(first)  # its tunnel stays; after runner_timeout its id may be reclaimed
        cluster.wait_until(
            "the first runner inactive",
            lambda: cluster.status()["runners"][0]["status"] == "inactive",
        )
        cluster.start(second)
        cluster.wait_until(
            "the second runner on id 1",
            lambda: [r["runner_id"] for r in own_status(cluster, second)["runners"]] == [1],
        )
        cluster.start(first)
        cluster.wait_until(
            "the first runner refused", lambda: "[pool_exhausted]" in first.log.read_text()
        )
        cluster.wait_until("its vxlan0 gone", lambda: "vxlan0" not in links(first), timeout=10)
        cluster.wait_until(
            "the refusal published", lambda: reason_holds(cluster, first, "pool_exhausted")
        )
        status = own_status(cluster, first)
        assert (status["network"], status["runners"]) == ("kohakuriver-net", [])
        # vxlan0 (VNI 101 is the second runner's now) and the rules go at once; the bridge and
        # the overlay network stay only while a container is attached, and that is said
        assert "vxlan0" not in links(first)
        assert "KRNET" not in first.node.run(["iptables-save"]).stdout
        assert "kohaku-overlay" in links(first)
        assert "kept kohaku-overlay: containers are still attached" in first.log.read_text()

        cluster.docker(first, "rm", "-f", "c1")
        cluster.wait_until(  # the next refused retry finds the bridge free
            "the bridge and overlay network gone",
            lambda: (
                "kohaku-overlay" not in links(first)
                and "kohakuriver-overlay" not in cluster.docker(first, "network", "ls")
            ),
            timeout=90,
        )
        assert "kohakuriver-net" in cluster.docker(first, "network", "ls")
        assert "vxlan0" in links(second)  # the owner of id 1 is untouched
