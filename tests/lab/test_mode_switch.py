"""Runners follow a host whose overlay_mode changed (issue #15): hub -> direct -> hub.

Only the host's config changes and only its `krnet serve` restarts; the runners' serves run on
untouched and follow at their next welcome. What each runner built is read back with
iproute2 and ipset inside its namespace, independent of the code under test. No dockerd: the
switch is kernel state and the runners' own namespaces are enough to send packets from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from krnet.lab.cluster import Cluster, runner_underlay
from krnet.lab.processes import ClusterNode
from tests.support import require_privileged

pytestmark = pytest.mark.privileged

IDS = (1, 2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "bridge", "nsenter", "unshare", "iptables", "ipset", "ping")
    with Cluster(tmp_path_factory.mktemp("modeswitch"), runners=2, with_docker=False) as built:
        built.start_all()
        built.wait_for_runners()
        yield built


def ip_json(runner: ClusterNode, *argv: str) -> Any:
    return json.loads(runner.node.run(["ip", "-j", *argv], check=False).stdout or "[]")


def has_vtep(runner: ClusterNode) -> bool:
    return ip_json(runner, "link", "show", "dev", "vxkrd") != []


def peer_entries(runner: ClusterNode, peer: int) -> tuple[bool, bool, bool]:
    """Whether `runner` holds `peer`'s direct route, permanent neighbour and FDB entry."""
    vtep = f"10.{peer}.0.0"
    routes = ip_json(runner, "route", "show", f"10.{peer}.0.0/16")
    route = any(
        (r.get("dev"), r.get("gateway"), "onlink" in r.get("flags", [])) == ("vxkrd", vtep, True)
        for r in routes
    )
    neighbours = ip_json(runner, "neigh", "show", vtep)
    neighbour = any(n.get("dev") == "vxkrd" and "PERMANENT" in n["state"] for n in neighbours)
    fdb = json.loads(runner.node.run(["bridge", "-j", "fdb", "show"]).stdout or "[]")
    forwarding = any(f.get("dst") == runner_underlay(peer) for f in fdb)
    return route, neighbour, forwarding


def guard_members(runner: ClusterNode) -> set[str]:
    saved = runner.node.run(["ipset", "save", "krnet-vxlan"]).stdout
    return {line.split()[2] for line in saved.splitlines() if line.startswith("add ")}


def hub_route(runner: ClusterNode, own: int) -> bool:
    """The runner's route of the overlay through the hub: 10.0.0.0/8 via 10.N.0.254."""
    routes = ip_json(runner, "route", "show", "10.0.0.0/8")
    return [r.get("gateway") for r in routes] == [f"10.{own}.0.254"]


def own_status(cluster: Cluster, runner: ClusterNode) -> tuple[str, list[tuple[int, str]]]:
    """The runner's `node overlay --json`: its mode and the direct peers it lists."""
    status = cluster.status(runner)
    [own] = status["runners"]
    peers = [(p["runner_id"], p["physical_ip"]) for p in own.get("direct_peers", [])]
    return status["overlay_mode"], peers


def restart_host(cluster: Cluster, mode: str) -> None:
    """Stop the host's serve, rewrite its config with `mode`, start it again."""
    assert cluster.stop(cluster.host) == 0
    cluster.write_config(cluster.host, overlay_mode=mode)
    cluster.start(cluster.host)


def host_mode(cluster: Cluster, mode: str) -> None:
    """Put the host in `mode`: stop its serve, rewrite its config, start it; runners untouched."""
    if cluster.status()["overlay_mode"] == mode:
        return
    runners = [runner.serve for runner in cluster.nodes]
    restart_host(cluster, mode)
    cluster.wait_for_runners()
    assert [runner.serve for runner in cluster.nodes] == runners
    assert all(process is not None and process.poll() is None for process in runners)


def others(own: int) -> list[int]:
    return [peer for peer in IDS if peer != own]


def ping(runner: ClusterNode, address: str) -> None:
    """Three echoes from the runner's namespace to an overlay address, all answered."""
    pinged = runner.node.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", address], check=False)
    assert pinged.returncode == 0, pinged.stdout


def test_runners_follow_the_host_into_direct_mode(cluster: Cluster) -> None:
    host_mode(cluster, "hub")
    assert not any(has_vtep(runner) for runner in cluster.nodes)
    host_mode(cluster, "direct")
    for own, runner in enumerate(cluster.nodes, start=1):
        [peer] = others(own)
        cluster.wait_until(f"{runner.name}'s vxkrd", lambda r=runner: has_vtep(r))
        cluster.wait_until(
            f"{runner.name}'s entries for runner {peer}",
            lambda r=runner, p=peer: peer_entries(r, p) == (True, True, True),
        )
        assert runner_underlay(peer) in guard_members(runner)
        assert hub_route(runner, own)
        listed = ("direct", [(peer, runner_underlay(peer))])
        cluster.wait_until(
            f"{runner.name}'s node overlay --json to list runner {peer}",
            lambda r=runner, w=listed: own_status(cluster, r) == w,
        )


def test_runners_follow_the_host_back_to_hub(cluster: Cluster) -> None:
    host_mode(cluster, "direct")
    cluster.wait_until("both vxkrd", lambda: all(has_vtep(r) for r in cluster.nodes))
    host_mode(cluster, "hub")
    for own, runner in enumerate(cluster.nodes, start=1):
        [peer] = others(own)
        cluster.wait_until(f"{runner.name}'s vxkrd to go", lambda r=runner: not has_vtep(r))
        cluster.wait_until(
            f"{runner.name}'s node overlay --json to say hub",
            lambda r=runner: own_status(cluster, r) == ("hub", []),
        )
        assert peer_entries(runner, peer) == (False, False, False)
        assert guard_members(runner) == {"192.0.2.1"}  # the host alone
        assert hub_route(runner, own)
    ping(cluster.nodes[0], "10.0.0.1")


LEFT_OVER = "removed a direct side left from before"


def test_a_runner_down_while_the_host_went_back_to_hub_drops_its_direct_side(
    cluster: Cluster,
) -> None:
    """Runner 2's serve is stopped in direct mode (a SIGKILL leaves the same kernel state) and
    the host goes back to hub meanwhile: at its start runner 2 removes the `vxkrd` it kept."""
    one, two = cluster.nodes
    host_mode(cluster, "direct")
    cluster.wait_until("runner 2's entries", lambda: peer_entries(two, 1) == (True, True, True))
    assert cluster.stop(two) == 0
    restart_host(cluster, "hub")
    cluster.wait_until("runner 1 to follow to hub", lambda: own_status(cluster, one)[0] == "hub")
    assert has_vtep(two) and peer_entries(two, 1) == (True, True, True)  # kept while down
    said = two.log.stat().st_size
    cluster.start(two)
    cluster.wait_for_runners()
    cluster.wait_until("runner 2's vxkrd to go", lambda: not has_vtep(two))
    assert peer_entries(two, 1) == (False, False, False)
    assert guard_members(two) == {"192.0.2.1"}
    assert hub_route(two, 2)
    assert own_status(cluster, two) == ("hub", [])
    ping(two, "10.1.0.1")  # runner 1's gateway, through the hub: lost by the kept vxkrd
    ping(two, "10.0.0.1")
    assert LEFT_OVER in two.log.read_bytes()[said:].decode()
    assert LEFT_OVER not in one.log.read_text()  # a clean or following runner says nothing
