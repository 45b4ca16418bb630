"""Direct mode's kernel side on real kernels: three runner namespaces on one underlay, no host.

Each runner's data plane runs in its namespace (tests/lab/direct_driver.py); what it built is
read back with iproute2 (`ip -j`, `bridge -j`), independent of the code under test. With no
host at all, a ping between two runners that is answered went direct.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from krnet.core.model.report import RunnerReport
from krnet.lab.namespaces import Lab, Node
from tests.support import require_privileged
from tests.unit.test_planes import allocation

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]
HOST_IP = "192.0.2.1"  # in the allocations only: no host node, so nothing can go through one
IDS = (1, 2, 3)
BLOCK = ["PREROUTING", "-s", "192.0.2.12", "-p", "udp", "--dport", "4789", "-j", "DROP"]


def underlay(runner_id: int) -> str:
    return f"192.0.2.1{runner_id}"


class Driver:
    """One runner's plane in its namespace: a command in, its changes and report out."""

    def __init__(self, node: Node) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DOCKER_HOST": "unix:///nonexistent.sock"}
        argv = [sys.executable, "-m", "tests.lab.direct_driver"]
        pipe = subprocess.PIPE
        self.node = node
        self.process = node.popen(argv, env=env, stdout=pipe, stderr=None, stdin=pipe, text=True)

    def send(self, op: str, **fields: object) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"op": op, **fields}) + "\n")
        stdin.flush()
        answer: dict[str, Any] = json.loads(stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer

    def peers(self, *ids: int) -> dict[str, Any]:
        return self.send("peers", peers=[(rid, underlay(rid)) for rid in ids])

    def paths(self) -> dict[int, str]:
        report = RunnerReport.from_wire(self.send("probe")["report"])  # as the host reads it
        return {pair.runner_id: pair.path for pair in report.direct_peers}


@pytest.fixture(scope="module")
def runners() -> Iterator[dict[int, Driver]]:
    require_privileged("ip", "bridge", "iptables", "ping", "nsenter")
    with Lab() as lab:
        drivers = {rid: Driver(lab.add_node(f"r{rid}", f"{underlay(rid)}/24")) for rid in IDS}
        for rid, driver in drivers.items():
            driver.send("apply", allocation=allocation(rid).model_dump(mode="json"))
            driver.peers(*IDS)
        yield drivers


def ip_json(node: Node, *argv: str) -> Any:
    return json.loads(node.run([*argv]).stdout or "[]")


def vtep_entries(node: Node) -> tuple[list[tuple[str, str | None]], list[Any], list[Any]]:
    """(routes, permanent neighbours, FDB entries) on vxkrd, as iproute2 shows them."""
    routes = [
        (r["dst"], r.get("gateway"))
        for r in ip_json(node, "ip", "-j", "route", "show", "dev", "vxkrd")
    ]
    neigh = [
        (n["dst"], n["lladdr"], n["state"])
        for n in ip_json(node, "ip", "-j", "neigh", "show", "dev", "vxkrd")
    ]
    fdb = [
        (f["mac"], f.get("dst"), f.get("state"))
        for f in ip_json(node, "bridge", "-j", "fdb", "show", "dev", "vxkrd")
    ]
    return sorted(routes), sorted(neigh), sorted(fdb)


def counters(node: Node, name: str) -> int:
    (shown,) = ip_json(node, "ip", "-j", "-s", "link", "show", "dev", name)
    return int(shown["stats64"]["tx"]["packets"])


def ping(node: Node, source: str, target: str, count: int = 2) -> bool:
    argv = [
        "ping",
        "-c",
        str(count),
        "-i",
        "0.2",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1422",
        "-I",
        source,
    ]
    return node.run([*argv, target], check=False).returncode == 0


def test_apply_peers_builds_exactly_the_vtep_and_the_other_peers_entries(
    runners: dict[int, Driver],
) -> None:
    node = runners[1].node
    (link,) = ip_json(node, "ip", "-d", "-j", "link", "show", "dev", "vxkrd")
    data = link["linkinfo"]["info_data"]
    assert (data["id"], data["local"], data["port"], data["learning"]) == (
        100,
        "192.0.2.11",
        4789,
        False,
    )
    assert "remote" not in data and "group" not in data
    assert (link["address"], link["mtu"]) == ("02:4b:52:00:00:01", 1450)
    addresses = ip_json(node, "ip", "-j", "-4", "addr", "show", "dev", "vxkrd")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addresses] == [("10.1.0.0", 32)]
    assert vtep_entries(node) == (
        [
            ("10.2.0.0", None),
            ("10.2.0.0/16", "10.2.0.0"),
            ("10.3.0.0", None),
            ("10.3.0.0/16", "10.3.0.0"),
        ],
        [
            ("10.2.0.0", "02:4b:52:00:00:02", ["PERMANENT"]),
            ("10.3.0.0", "02:4b:52:00:00:03", ["PERMANENT"]),
        ],
        [
            ("02:4b:52:00:00:02", "192.0.2.12", "permanent"),
            ("02:4b:52:00:00:03", "192.0.2.13", "permanent"),
        ],
    )
    route = ip_json(node, "ip", "-j", "route", "show", "10.2.0.0/16")[0]
    assert "onlink" in route["flags"]
    assert runners[1].peers(*IDS)["changes"] == []  # a second call changes nothing


def test_drift_made_by_hand_is_repaired_and_reported(runners: dict[int, Driver]) -> None:
    node, before = runners[1].node, vtep_entries(runners[1].node)
    node.run(["ip", "neigh", "del", "10.3.0.0", "dev", "vxkrd"])
    node.run(["bridge", "fdb", "del", "02:4b:52:00:00:03", "dev", "vxkrd", "dst", "192.0.2.13"])
    node.run(["ip", "route", "del", "10.3.0.0/16"])
    node.run(["ip", "neigh", "add", "10.9.0.0", "lladdr", "02:00:00:00:00:09", "dev", "vxkrd"])
    node.run(["ip", "route", "add", "10.9.0.0/16", "dev", "vxkrd"])  # proto boot, not krnet's
    others = (  # another link's entries, which the filtered dumps must leave out
        ["ip", "neigh", "add", "192.0.2.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0"],
        ["bridge", "fdb", "add", "02:00:00:00:00:99", "dev", "eth0", "self", "permanent"],
        ["ip", "route", "add", "10.8.0.0/16", "dev", "eth0"],
    )
    for argv in others:
        node.run(argv)
    changes = runners[1].peers(*IDS)["changes"]
    assert len(changes) == 5 and "vxkrd: neighbour 10.9.0.0 removed" in changes
    assert "vxkrd: route 10.9.0.0/16 removed" in changes
    assert vtep_entries(node) == before
    assert ip_json(node, "ip", "-j", "neigh", "show", "192.0.2.99") != []
    assert "02:00:00:00:00:99" in node.run(["bridge", "fdb", "show", "dev", "eth0"]).stdout
    assert ip_json(node, "ip", "-j", "route", "show", "10.8.0.0/16") != []


def test_send_redirects_is_off_on_every_runner(runners: dict[int, Driver]) -> None:
    for driver in runners.values():
        for device in ("all", "default", "kohaku-overlay"):
            key = f"net.ipv4.conf.{device}.send_redirects"
            assert driver.node.run(["sysctl", "-n", key]).stdout.strip() == "0", key


def test_the_guard_admits_every_peer(runners: dict[int, Driver]) -> None:
    rules = runners[2].node.run(["iptables", "-S", "KRNET-VXLAN"]).stdout
    assert "--dport 4789 -m set --match-set krnet-vxlan src -j ACCEPT" in rules
    members = runners[2].node.run(["ipset", "save", "krnet-vxlan"]).stdout
    for address in (HOST_IP, "192.0.2.11", "192.0.2.13"):
        assert f"add krnet-vxlan {address}\n" in members


def test_runners_reach_each_other_direct_with_no_host_at_all(
    runners: dict[int, Driver],
) -> None:
    node = runners[1].node
    hub_before, direct_before = counters(node, "vxlan0"), counters(node, "vxkrd")
    assert ping(node, "10.1.0.0", "10.2.0.0", count=20)  # VTEP to VTEP, full MTU with DF
    assert ping(node, "10.1.0.1", "10.3.0.1", count=20)  # subnet to subnet: the onlink route
    # 40 full-size echoes went out by vxkrd; the hub tunnel saw far fewer packets (the stray
    # multicast the bridge floods, a few), so none of them took the hub
    assert counters(node, "vxlan0") < hub_before + 20
    assert counters(node, "vxkrd") >= direct_before + 40


def test_a_blocked_pair_goes_to_the_hub_after_three_probes_and_back_after_three(
    runners: dict[int, Driver],
) -> None:
    one, two = runners[1], runners[2]
    one.node.run(["iptables", "-t", "raw", "-I", *BLOCK])  # runner 2's VXLAN never reaches 1
    try:
        for _ in range(2):
            assert (one.paths()[2], two.paths()[1]) == ("direct", "direct")
        assert (one.paths(), two.paths()) == ({2: "hub", 3: "direct"}, {1: "hub", 3: "direct"})
        routes, neigh, fdb = vtep_entries(one.node)
        assert ("10.2.0.0/16", "10.2.0.0") not in routes and ("10.2.0.0", None) in routes
        assert len(neigh) == len(fdb) == 2  # neighbour and FDB entry stay
    finally:
        one.node.run(["iptables", "-t", "raw", "-D", *BLOCK])
    for _ in range(2):
        assert (one.paths()[2], two.paths()[1]) == ("hub", "hub")
    assert (one.paths()[2], two.paths()[1]) == ("direct", "direct")
    assert ("10.2.0.0/16", "10.2.0.0") in vtep_entries(one.node)[0]


def test_a_removed_peer_loses_its_entries(runners: dict[int, Driver]) -> None:
    changes = runners[1].peers(1, 2)["changes"]
    assert any("neighbour 10.3.0.0 removed" in change for change in changes)
    routes, neigh, fdb = vtep_entries(runners[1].node)
    assert routes == [("10.2.0.0", None), ("10.2.0.0/16", "10.2.0.0")]
    assert [n[0] for n in neigh] == ["10.2.0.0"] and [f[1] for f in fdb] == ["192.0.2.12"]
    rules = runners[1].node.run(["iptables", "-S", "KRNET-VXLAN"]).stdout
    assert "192.0.2.13" not in rules


def test_withdrawing_direct_mode_and_cleanup_leave_nothing(runners: dict[int, Driver]) -> None:
    runners[2].send("withdraw_direct")
    assert runners[2].node.run(["ip", "link", "show", "vxkrd"], check=False).returncode != 0
    assert "192.0.2.11" not in runners[2].node.run(["iptables", "-S", "KRNET-VXLAN"]).stdout
    runners[3].send("cleanup")
    node = runners[3].node
    links = [link["ifname"] for link in ip_json(node, "ip", "-j", "link", "show")]
    assert sorted(links) == ["eth0", "lo"]
    assert ip_json(node, "ip", "-j", "neigh", "show", "10.1.0.0") == []
    assert "KRNET" not in node.run(["iptables-save"]).stdout
