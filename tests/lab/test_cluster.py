"""A whole cluster in namespaces with a real dockerd per runner: the reference, proven with packets.

One cluster per module (dockerd start-up dominates the cost); tests that disturb it (restarts,
deleted links) put it back the way they found it, so their order does not matter.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from krnet.lab import proofs
from krnet.lab.cluster import HOST_UNDERLAY, Cluster, runner_underlay
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox")
    with Cluster(tmp_path_factory.mktemp("cluster"), runners=2) as built:
        built.start_all()
        built.wait_for_runners()
        for index, runner in enumerate(built.nodes, start=1):
            built.run_container(runner, f"c{index}")
        yield built


def ip_json(node: object, *args: str) -> list[dict]:
    return json.loads(node.node.run(["ip", "-j", *args]).stdout)  # type: ignore[attr-defined]


def iptables_save(node: object, table: str) -> str:
    return node.node.run(["iptables-save", "-t", table]).stdout  # type: ignore[attr-defined]


def addresses(node: object, link: str) -> list[str]:
    info = ip_json(node, "addr", "show", "dev", link)[0]
    return [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"]


# -- every name, address, VNI, MTU, route and rule of the reference's tables -----------------


def test_host_interfaces_match_the_reference(cluster: Cluster) -> None:
    assert addresses(cluster.host, "kohaku-host") == ["10.0.0.1/8"]
    for index in (1, 2):
        link = proofs.link_details(cluster.host, f"vxkr{index}")
        data = link["linkinfo"]["info_data"]
        assert link["linkinfo"]["info_kind"] == "vxlan"
        assert data["id"] == 100 + index
        assert data["local"] == HOST_UNDERLAY
        assert data["remote"] == runner_underlay(index)
        assert data["port"] == 4789
        assert data["learning"] is False
        assert link["mtu"] == 1450
        assert "UP" in link["flags"]
        assert addresses(cluster.host, f"vxkr{index}") == [f"10.{index}.0.254/16"]
    routes = {(r["dst"], r.get("dev")) for r in ip_json(cluster.host, "route")}
    assert ("10.1.0.0/16", "vxkr1") in routes and ("10.2.0.0/16", "vxkr2") in routes
    forward = cluster.host.node.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
    assert forward == "1"  # no dockerd in the host namespace: this is krnet's doing


def test_runner_interfaces_match_the_reference(cluster: Cluster) -> None:
    for index, runner in enumerate(cluster.nodes, start=1):
        bridge = proofs.link_details(runner, "kohaku-overlay")
        assert bridge["linkinfo"]["info_kind"] == "bridge"
        assert bridge["mtu"] == 1450
        assert addresses(runner, "kohaku-overlay") == [f"10.{index}.0.1/16"]
        tunnel = proofs.link_details(runner, "vxlan0")
        data = tunnel["linkinfo"]["info_data"]
        assert (data["id"], data["remote"], data["port"]) == (100 + index, HOST_UNDERLAY, 4789)
        assert tunnel["master"] == "kohaku-overlay"
        assert tunnel["mtu"] == 1450
        routes = {(r["dst"], r.get("gateway")) for r in ip_json(runner, "route")}
        assert ("10.0.0.0/8", f"10.{index}.0.254") in routes


def test_firewall_rules_match_the_reference(cluster: Cluster) -> None:
    for node in [cluster.host, *cluster.nodes]:
        rules = iptables_save(node, "filter")
        assert "-A FORWARD -j KRNET-FORWARD" in rules
        assert "-A KRNET-FORWARD -s 10.0.0.0/8 -j ACCEPT" in rules
        assert "-A KRNET-FORWARD -d 10.0.0.0/8 -j ACCEPT" in rules
    for runner in cluster.nodes:
        nat = iptables_save(runner, "nat")
        assert "-A KRNET-POSTROUTING -s 10.0.0.0/8 ! -d 10.0.0.0/8 -j MASQUERADE" in nat
    assert "MASQUERADE" not in iptables_save(cluster.host, "nat")


def test_docker_overlay_network_matches_the_reference(cluster: Cluster) -> None:
    for index, runner in enumerate(cluster.nodes, start=1):
        network = json.loads(cluster.docker(runner, "network", "inspect", "kohakuriver-overlay"))[0]
        pool = network["IPAM"]["Config"][0]
        assert pool["Subnet"] == f"10.{index}.0.0/16"
        assert pool["Gateway"] == f"10.{index}.0.1"
        assert f"10.{index}.0.254" in pool.get("AuxiliaryAddresses", {}).values()
        options = network["Options"]
        assert options["com.docker.network.bridge.name"] == "kohaku-overlay"
        assert options["com.docker.network.driver.mtu"] == "1450"
        assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        address = cluster.containers[f"c{index}"]
        assert address.startswith(f"10.{index}.") and address != f"10.{index}.0.254"


def test_node_overlay_json_on_the_host(cluster: Cluster) -> None:
    status = cluster.status()
    assert status["mode"] == "host"
    assert status["host_overlay_ip"] == "10.0.0.1/8"
    assert (status["total"], status["active"], status["inactive"]) == (2, 2, 0)
    assert status["available_ids"] == 253
    first = next(r for r in status["runners"] if r["runner_id"] == 1)
    assert first["interface"] == "vxkr1"
    assert (first["vni"], first["subnet"], first["gateway"], first["host_ip"]) == (
        101,
        "10.1.0.0/16",
        "10.1.0.1",
        "10.1.0.254",
    )
    assert first["physical_ip"] == runner_underlay(1)
    assert first["hostname"] == "krnet-r1"


def test_hub_probes_every_tunnel_at_full_mtu(cluster: Cluster) -> None:
    def probes() -> list[dict]:
        return [runner["probe"] for runner in cluster.status()["runners"]]

    # the window (10 rounds) may still hold a round from before the runner built its side, for
    # the full-size probe and for the small one alike
    def clean(p: dict) -> bool:
        return bool(p) and p["received"] >= 2 and p["loss"] == 0 and p["small_loss"] == 0

    cluster.wait_until("a clean probe window", lambda: all(clean(p) for p in probes()), timeout=30)
    for probe in probes():
        assert probe["rtt_ms"] is not None and probe["last_success"].endswith("Z")


def test_node_overlay_names_the_network_containers_should_use(cluster: Cluster) -> None:
    def networks() -> list[object]:
        return [runner["network"] for runner in cluster.status()["runners"]]

    cluster.wait_until("runners reporting their network", lambda: None not in networks())
    assert networks() == ["kohakuriver-overlay", "kohakuriver-overlay"]
    own = json.loads(cluster.krnet(cluster.nodes[0], "node", "overlay", "--json"))
    assert own["mode"] == "runner"
    assert [(r["runner_id"], r["interface"], r["network"]) for r in own["runners"]] == [
        (1, "vxlan0", "kohakuriver-overlay")
    ]
    assert "kohakuriver-net" in cluster.docker(cluster.nodes[0], "network", "ls")


# -- real packets -------------------------------------------------------------------------------


def test_container_reaches_container_on_another_runner(cluster: Cluster) -> None:
    proofs.ping(cluster, cluster.nodes[0], "c1", cluster.containers["c2"])
    proofs.ping(cluster, cluster.nodes[1], "c2", cluster.containers["c1"])


def test_container_reaches_the_host(cluster: Cluster) -> None:
    proofs.ping(cluster, cluster.nodes[0], "c1", "10.0.0.1")
    proofs.ping(cluster, cluster.nodes[1], "c2", "10.0.0.1")


def test_full_mtu_passes_with_df_and_one_byte_more_does_not(cluster: Cluster) -> None:
    proofs.full_mtu(cluster)


def test_container_reaches_the_internet_through_its_runners_nat(cluster: Cluster) -> None:
    assert "seen from 192.0.2.11" in proofs.nat(cluster)


# -- restarts and repair ------------------------------------------------------------------------


def continuous_ping(cluster: Cluster, count: int) -> subprocess.Popen[str]:
    """c1 pings c2 every 0.2 s for `count` packets (busybox ping)."""
    runner = cluster.nodes[0]
    assert runner.docker_host is not None
    return subprocess.Popen(
        [
            "docker",
            "-H",
            runner.docker_host,
            "exec",
            "c1",
            "ping",
            "-i",
            "0.2",
            "-c",
            str(count),
            cluster.containers["c2"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def received(output: str) -> tuple[int, int]:
    summary = proofs._ping_summary(output)
    got, sent = summary.split()[0].split("/")
    return int(got), int(sent)


def test_host_restart_loses_no_packet(cluster: Cluster) -> None:
    pinger = continuous_ping(cluster, 40)
    time.sleep(1)
    assert cluster.stop(cluster.host) == 0
    time.sleep(1)
    cluster.start(cluster.host)
    output, _ = pinger.communicate(timeout=60)
    assert received(output) == (40, 40), output
    cluster.wait_for_runners()


def test_runner_restart_keeps_its_id(cluster: Cluster) -> None:
    runner = cluster.nodes[1]
    assert cluster.stop(runner) == 0
    cluster.start(runner)
    cluster.wait_until(
        "runner 2 back",
        lambda: (
            json.loads(cluster.krnet(runner, "node", "overlay", "--json"))["runners"][0][
                "runner_id"
            ]
            == 2
        ),
    )
    cluster.wait_for_runners()
    ids = {r["hostname"]: r["runner_id"] for r in cluster.status()["runners"]}
    assert ids == {"krnet-r1": 1, "krnet-r2": 2}


def test_tunnel_deleted_while_host_is_down_comes_back_at_start(cluster: Cluster) -> None:
    cluster.stop(cluster.host)
    cluster.host.node.run(["ip", "link", "del", "vxkr2"])
    cluster.start(cluster.host)
    cluster.wait_until("vxkr2 recreated", lambda: bool(proofs.link_details(cluster.host, "vxkr2")))
    cluster.wait_for_runners()
    proofs.ping(cluster, cluster.nodes[0], "c1", cluster.containers["c2"])


def test_runner_address_change_updates_the_tunnel_remote(cluster: Cluster) -> None:
    runner = cluster.nodes[1]
    old, new = runner_underlay(2), "192.0.2.42"
    try:
        change_runner_address(cluster, runner, old, new)
        cluster.wait_until(
            "vxkr2 remote updated",
            lambda: (
                proofs.link_details(cluster.host, "vxkr2")["linkinfo"]["info_data"]["remote"] == new
            ),
        )
        proofs.ping(cluster, cluster.nodes[0], "c1", cluster.containers["c2"])
    finally:
        change_runner_address(cluster, runner, new, old)
        cluster.wait_until(
            "vxkr2 remote restored",
            lambda: (
                proofs.link_details(cluster.host, "vxkr2")["linkinfo"]["info_data"]["remote"] == old
            ),
        )


def change_runner_address(cluster: Cluster, runner: object, old: str, new: str) -> None:
    cluster.stop(runner)  # type: ignore[arg-type]
    node = runner.node  # type: ignore[attr-defined]
    # Deleting a primary address takes its secondaries along: delete first, then add.
    node.run(["ip", "addr", "del", f"{old}/24", "dev", "eth0"])
    node.run(["ip", "addr", "add", f"{new}/24", "dev", "eth0"])
    node.run(["ip", "route", "replace", "default", "via", "192.0.2.254"])
    node.interface = IPv4Interface(f"{new}/24")
    cluster.write_config(runner)  # type: ignore[arg-type]
    cluster.start(runner)  # type: ignore[arg-type]


def test_rules_links_and_routes_changed_by_hand_are_repaired(cluster: Cluster) -> None:
    """The next reconcile (every 5 s in the lab) puts back what a person or Docker removed."""
    host, runner = cluster.host, cluster.nodes[0]
    host.node.run(["iptables", "-D", "KRNET-FORWARD", "-s", "10.0.0.0/8", "-j", "ACCEPT"])
    host.node.run(["ip", "link", "set", "vxkr1", "mtu", "1400"])
    runner.node.run(["iptables", "-t", "nat", "-F", "KRNET-POSTROUTING"])
    runner.node.run(["ip", "route", "del", "10.0.0.0/8"])
    cluster.wait_until(
        "host rule and MTU repaired",
        lambda: (
            "-A KRNET-FORWARD -s 10.0.0.0/8 -j ACCEPT" in iptables_save(host, "filter")
            and proofs.link_details(host, "vxkr1")["mtu"] == 1450
        ),
        timeout=30,
    )
    cluster.wait_until(
        "runner NAT rule and route repaired",
        lambda: (
            "MASQUERADE" in iptables_save(runner, "nat")
            and any(r["dst"] == "10.0.0.0/8" for r in ip_json(runner, "route"))
        ),
        timeout=30,
    )
    proofs.ping(cluster, runner, "c1", cluster.containers["c2"])
    proofs.nat(cluster)


# -- the port guard ------------------------------------------------------------------------------


def vxlan_frame(vni: int) -> bytes:
    """A VXLAN header (I flag, VNI) around a broadcast Ethernet frame."""
    header = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\x00"
    return header + b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" + b"\x00" * 28


def guard_drops(node: object) -> int:
    output = node.node.run(["iptables", "-L", "KRNET-VXLAN", "-v", "-x", "-n"]).stdout  # type: ignore[attr-defined]
    return sum(int(line.split()[0]) for line in output.splitlines() if " DROP " in f" {line} ")


def test_port_guard_drops_vxlan_frames_from_an_unregistered_address(cluster: Cluster) -> None:
    rogue = cluster.lab.add_node("rogue", "192.0.2.66/24")
    before = guard_drops(cluster.host)
    send = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"[s.sendto(bytes.fromhex('{vxlan_frame(101).hex()}'), ('{HOST_UNDERLAY}', 4789)) "
        "for _ in range(5)]"
    )
    rogue.run(["python3", "-c", send])
    assert guard_drops(cluster.host) - before >= 5
    checks = json.loads(cluster.krnet(cluster.host, "doctor", "--json", check=False))
    guard = next(check for check in checks if check["check"] == "port_guard")
    assert guard["status"] == "pass"
    assert (
        f"{guard_drops(cluster.host)} VXLAN packet(s) from other addresses dropped"
        in (guard["detail"])
    )
    proofs.ping(cluster, cluster.nodes[0], "c1", cluster.containers["c2"])  # runners still pass


# -- cleanup -------------------------------------------------------------------------------------


def test_cleanup_leaves_nothing_behind(tmp_path: Path) -> None:
    """A separate small cluster (no Docker), so the shared one stays up for the other tests."""
    require_privileged("ip", "nsenter", "unshare", "iptables")
    with Cluster(tmp_path / "c", runners=1, with_docker=False) as small:
        small.start_all()
        small.wait_for_runners()
        for node in [small.host, *small.nodes]:
            small.stop(node)
            for _ in range(2):  # twice: the second run must be harmless
                small.krnet(node, "cleanup", "--yes")
            links = {link["ifname"] for link in ip_json(node, "link")}
            assert not links & {"kohaku-host", "kohaku-overlay", "vxlan0", "vxkr1"}
            for table in ("filter", "nat"):
                assert "KRNET" not in iptables_save(node, table)


def test_tunnel_comes_up_without_docker_and_the_network_follows_docker(tmp_path: Path) -> None:
    """Docker down: the overlay still works; once dockerd starts, the runner creates its network."""
    require_privileged("ip", "nsenter", "unshare", "iptables", "dockerd", "docker")
    with Cluster(tmp_path / "late", runners=1, with_docker=False) as small:
        small.start_all()
        small.wait_for_runners()
        runner = small.nodes[0]
        assert proofs.link_details(runner, "vxlan0")["master"] == "kohaku-overlay"
        proofs.runner_reaches_host(small)
        small.start_dockerd(runner)
        small.wait_until(
            "the overlay network once Docker answers",
            lambda: "kohakuriver-overlay" in small.docker(runner, "network", "ls"),
        )
