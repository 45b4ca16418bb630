"""`krnet node release` and `node prune` against a live lab host (two runners, real dockerd).

What is proven from the kernel: the tunnel and the guard entry go at once (`ip -d link`,
`iptables-save` in the host namespace), a released tunnel put back by hand (a failed removal,
a race) is removed by the next reconcile and after a restart instead of being adopted, the
record and the events agree, and runner 1's traffic never notices. Each test leaves both
runners joined, so their order does not matter.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from krnet.core.control.agent import load_runner_key
from krnet.core.record.reader import database_path, read_events
from krnet.lab import proofs
from krnet.lab.cluster import HOST_UNDERLAY, Cluster, runner_underlay
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

R2 = runner_underlay(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged("ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox")
    with Cluster(tmp_path_factory.mktemp("release"), runners=2) as built:
        built.start_all()
        proofs.runners_joined(built)
        proofs.start_containers(built)  # c1 on runner 1, c2 on runner 2
        yield built


@pytest.fixture
def lab(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, with runner 2 running and both runners joined again afterwards."""
    yield cluster
    if cluster.nodes[1].serve is None:
        cluster.start(cluster.nodes[1])
    cluster.wait_for_runners()


def tunnel_present(cluster: Cluster, name: str = "vxkr2") -> bool:
    result = cluster.host.node.run(["ip", "-d", "link", "show", name], check=False)
    return result.returncode == 0


def guard_entry(cluster: Cluster, address: str = R2) -> bool:
    """Whether the host's guard admits `address` (a member of its ipset set)."""
    members = cluster.host.node.run(["ipset", "save", "krnet-vxlan"]).stdout
    return f"add krnet-vxlan {address}" in members.splitlines()


def events(cluster: Cluster, runner_id: int) -> list[tuple[str, str]]:
    """(kind, message) of runner_id's events, oldest first."""
    found = read_events(database_path(cluster.host.data_dir), 500) or []
    return [(e.kind, e.message) for e in reversed(found) if e.runner_id == runner_id]


def lifecycle(cluster: Cluster, runner_id: int) -> list[str]:
    kinds = {"join", "rejoin", "reclaim", "adopt", "leave", "release"}
    return [kind for kind, _ in events(cluster, runner_id) if kind in kinds]


def runner_key(cluster: Cluster) -> str | None:
    """Runner 2's key, as its data dir holds it."""
    return load_runner_key(cluster.nodes[1].data_dir)


def runner_ids(cluster: Cluster) -> list[int]:
    return [runner["runner_id"] for runner in cluster.status()["runners"]]


def stop_runner_2(cluster: Cluster) -> None:
    """Stop runner 2's agent and wait until the host counts it inactive."""
    cluster.stop(cluster.nodes[1])
    cluster.wait_until(
        "runner 2 inactive",
        lambda: any(
            r["runner_id"] == 2 and r["status"] == "inactive" for r in cluster.status()["runners"]
        ),
        timeout=30,
    )


def put_back_by_hand(cluster: Cluster) -> None:
    """vxkr2 as the host had built it: what a failed removal or a race would leave."""
    host = cluster.host.node
    spec = ["id", "102", "local", HOST_UNDERLAY, "remote", R2, "dstport", "4789", "nolearning"]
    host.run(["ip", "link", "add", "vxkr2", "type", "vxlan", *spec])
    host.run(["ip", "link", "set", "vxkr2", "up"])


def pinger(cluster: Cluster, count: int) -> subprocess.Popen[str]:
    """c1 (runner 1) pings the host's overlay address every 0.2 s."""
    runner = cluster.nodes[0]
    assert runner.docker_host is not None
    argv = ["docker", "-H", runner.docker_host, "exec", "c1", "ping", "-i", "0.2", "-c"]
    return subprocess.Popen(
        [*argv, str(count), proofs.HOST_OVERLAY_IP],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def one_line_exit_2(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("krnet: "), result.stderr
    assert all(text in result.stderr for text in expected), result.stderr


def test_release_refuses_an_unknown_runner_and_an_active_one(lab: Cluster) -> None:
    one_line_exit_2(
        lab.run_krnet(lab.host, "node", "release", "nobody", "--yes"),
        "unknown_runner",
        "no runner 'nobody' on this host",
    )
    one_line_exit_2(
        lab.run_krnet(lab.host, "node", "release", "krnet-r2", "--yes"),
        "runner 2 (krnet-r2) is active",
        "runner_timeout (5 s)",
        "--force",
    )
    one_line_exit_2(lab.run_krnet(lab.host, "node", "release", "2"), "add --yes")
    assert runner_ids(lab) == [1, 2] and tunnel_present(lab) and guard_entry(lab)
    assert "release" not in lifecycle(lab, 2)


def test_release_of_a_stopped_runner_frees_it_at_once_and_it_stays_released(
    lab: Cluster,
) -> None:
    stop_runner_2(lab)
    ping = pinger(lab, 40)
    result = lab.run_krnet(lab.host, "node", "release", "krnet-r2", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    [released] = json.loads(result.stdout)["released"]
    assert (released["runner_id"], released["hostname"], released["physical_ip"]) == (
        2,
        "krnet-r2",
        R2,
    )
    assert released["status"] == "inactive" and released["tunnel_error"] is None
    # at once, not at the next reconcile
    assert not tunnel_present(lab) and not guard_entry(lab)
    assert tunnel_present(lab, "vxkr1") and guard_entry(lab, runner_underlay(1))
    assert runner_ids(lab) == [1]
    assert lifecycle(lab, 2)[-1] == "release"
    # a tunnel left behind (a failed removal, a race) is removed by the next reconcile
    put_back_by_hand(lab)
    lab.wait_until("vxkr2 removed again", lambda: not tunnel_present(lab), timeout=30)
    # and after a restart of the host
    assert lab.stop(lab.host) == 0
    put_back_by_hand(lab)
    lab.start(lab.host)
    lab.wait_until("vxkr2 removed at start", lambda: not tunnel_present(lab), timeout=30)
    assert runner_ids(lab) == [1] and not guard_entry(lab)
    assert lifecycle(lab, 2)[-1] == "release"  # never adopted back
    output, _ = ping.communicate(timeout=60)
    assert proofs._ping_summary(output).startswith("40/40 received"), output
    proofs.nat(lab)
    # the runner comes back, nothing done on it: its host verifies it with its retired key and
    # enrols it afresh (docs/operations.md), a new runner on the lowest free id with a new key
    key = runner_key(lab)
    lab.start(lab.nodes[1])
    lab.wait_for_runners()
    assert lifecycle(lab, 2)[-2:] == ["release", "join"]  # "join", not "rejoin"
    assert runner_key(lab) != key
    lab.wait_until("c1 reaches c2 again", lambda: bool(proofs.cross_runner(lab)), timeout=30)


def test_forced_release_of_a_running_agent_that_then_joins_as_new(lab: Cluster) -> None:
    result = lab.run_krnet(lab.host, "node", "release", "2", "--yes", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("released runner 2 (krnet-r2, 192.0.2.12, active")
    assert "vxkr2 and its guard entry removed" in result.stdout
    # the agent's next heartbeat is refused; it reconnects by itself and is enrolled afresh
    # as a new runner (its key retired, not forgotten: docs/operations.md)
    lab.wait_until("runner 2 back", lambda: runner_ids(lab) == [1, 2], timeout=60)
    lab.wait_for_runners()
    assert lifecycle(lab, 2)[-2:] == ["release", "join"]
    assert tunnel_present(lab) and guard_entry(lab)
    lab.wait_until("c1 reaches c2 again", lambda: bool(proofs.cross_runner(lab)), timeout=30)


def test_prune_from_a_runner_with_the_token_releases_inactive_runners(lab: Cluster) -> None:
    stop_runner_2(lab)
    r1 = lab.nodes[0]
    remote = ("node", "prune", "--connect", HOST_UNDERLAY, "--yes", "--json")
    recent = lab.run_krnet(r1, *remote, "--older-than", "1h")
    assert recent.returncode == 0, recent.stderr
    assert json.loads(recent.stdout) == {"released": []}
    assert tunnel_present(lab) and runner_ids(lab) == [1, 2]
    one_line_exit_2(lab.run_krnet(r1, "node", "prune", "--yes"), "runner mode", "--connect")
    one_line_exit_2(
        lab.run_krnet(lab.host, "node", "prune", "--yes", "--older-than", "soon"),
        "--older-than 'soon' is not a duration",
    )
    result = lab.run_krnet(r1, *remote)
    assert result.returncode == 0, result.stderr
    assert [r["runner_id"] for r in json.loads(result.stdout)["released"]] == [2]
    assert not tunnel_present(lab) and not guard_entry(lab)
    assert runner_ids(lab) == [1] and lifecycle(lab, 2)[-1] == "release"
    proofs.container_to_host(lab)
    proofs.runner_reaches_host(lab)
    again = lab.run_krnet(lab.host, "node", "prune", "--yes")
    assert again.stdout == "no inactive runner to release (every inactive runner)\n"
