"""`metrics_bind` on a lab cluster: a real Prometheus scrapes the host and both runners, and
`/readyz` follows the kernel (a tunnel deleted by hand, then repaired by the reconcile).

Prometheus (Debian's package) runs in the host's namespace with a config and storage this test
writes; every request goes to addresses inside the lab's namespaces (through `nsenter`).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from krnet.lab.cluster import HOST_UNDERLAY, Cluster, ClusterNode
from tests.support import require_privileged

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

METRICS_PORT = 9470
PROMETHEUS = f"{HOST_UNDERLAY}:9090"


def metrics_address(node: ClusterNode) -> str:
    return f"{node.node.address}:{METRICS_PORT}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_privileged(
        "ip", "nsenter", "unshare", "iptables", "dockerd", "docker", "busybox", "curl", "prometheus"
    )
    with Cluster(tmp_path_factory.mktemp("cluster"), runners=2) as built:
        for node in built.nodes:
            built.write_config(node, metrics_bind=metrics_address(node))
        # the host repairs a deleted tunnel at its next reconcile: 30 s apart here (not the lab's
        # 5 s), so a loaded machine's readyz has the missing tunnel to see before it is back
        host_metrics = metrics_address(built.host)
        built.write_config(built.host, metrics_bind=host_metrics, reconcile_interval=30.0)
        built.start_all()
        built.wait_for_runners()
        yield built


def http(node: ClusterNode, url: str) -> tuple[int, str]:
    """GET `url` from inside `node`'s namespace: (status, body)."""
    result = node.node.run(
        ["curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url], check=False
    )
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


def start_prometheus(cluster: Cluster, workdir: Path) -> None:
    """Prometheus in the host's namespace scraping every node's /metrics each second."""
    targets = {
        "krnet-host": [metrics_address(cluster.host)],
        "krnet-runner": [metrics_address(runner) for runner in cluster.nodes],
    }
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(addresses)}\n"
        for job, addresses in targets.items()
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}",
        encoding="utf-8",
    )
    log = (workdir / "prometheus.log").open("ab")
    cluster.host.node.popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address={PROMETHEUS}",
        ],
        stdout=log,
        stderr=log,
    )
    cluster.wait_until("Prometheus to answer", lambda: http(cluster.host, ready_url())[0] == 200)


def ready_url() -> str:
    return f"http://{PROMETHEUS}/-/ready"


def query(cluster: Cluster, expr: str) -> list[dict[str, Any]]:
    """An instant query through Prometheus's HTTP API: the result vector."""
    url = f"http://{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(expr)}"
    status, body = http(cluster.host, url)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def values(cluster: Cluster, expr: str) -> dict[str, float]:
    """`expr`'s series, keyed by `job/runner_id` (or `job` alone), with their values."""
    found = {}
    for series in query(cluster, expr):
        labels = series["metric"]
        key = "/".join(filter(None, [labels.get("job"), labels.get("runner_id")]))
        found[key] = float(series["value"][1])
    return found


def until_not_ready(cluster: Cluster, node: ClusterNode) -> str:
    """/readyz's body once it says not ready (it looks at the kernel at most 1 s late; the
    host's reconcile repairs within 30 s here, a runner's within the lab's 5 s: the window is
    there to be seen)."""
    answers: list[tuple[int, str]] = []

    def not_ready() -> bool:
        answers.append(http(node, f"http://{metrics_address(node)}/readyz"))
        return answers[-1][0] == 503

    cluster.wait_until(f"{node.name} not ready", not_ready, timeout=10)
    return answers[-1][1]


def deleted_until_not_ready(cluster: Cluster, node: ClusterNode, link: str) -> str:
    """Delete `link` until /readyz has said not ready (the reconcile may rebuild it before a
    loaded machine gathers the next state: then it is deleted again, three times in all)."""
    for _ in range(2):
        node.node.run(["ip", "link", "del", link])
        with contextlib.suppress(TimeoutError):
            return until_not_ready(cluster, node)
    node.node.run(["ip", "link", "del", link])
    return until_not_ready(cluster, node)


def test_readyz_turns_not_ready_when_a_tunnel_is_deleted_and_ready_after_the_repair(
    cluster: Cluster,
) -> None:
    host, runner = cluster.host, cluster.nodes[0]
    for node in (host, runner):
        assert http(node, f"http://{metrics_address(node)}/healthz") == (200, "ok\n")
        cluster.wait_until(
            f"{node.name} ready",
            lambda n=node: http(n, f"http://{metrics_address(n)}/readyz") == (200, "ready\n"),
        )
    body = deleted_until_not_ready(cluster, host, "vxkr1")
    assert body.startswith("not ready: vxkr1 of runner 1") and "missing" in body
    assert body.count("\n") == 1
    assert http(host, f"http://{metrics_address(host)}/healthz")[0] == 200
    cluster.wait_until(
        "the reconcile to rebuild vxkr1 and the host to be ready again",
        lambda: http(host, f"http://{metrics_address(host)}/readyz") == (200, "ready\n"),
        timeout=60,
    )
    body = deleted_until_not_ready(cluster, runner, "vxlan0")
    assert "vxlan0" in body, body
    cluster.wait_until(
        "the runner to rebuild vxlan0 and be ready again",
        lambda: http(runner, f"http://{metrics_address(runner)}/readyz") == (200, "ready\n"),
        timeout=30,
    )


def test_prometheus_scrapes_the_cluster_and_sees_a_runner_go_inactive(
    cluster: Cluster, tmp_path: Path
) -> None:
    start_prometheus(cluster, tmp_path)
    cluster.wait_until(
        "Prometheus to scrape all three nodes",
        lambda: (
            values(cluster, "up") == {"krnet-host": 1.0, "krnet-runner": 1.0}
            and len(query(cluster, "up == 1")) == 3
        ),
    )
    cluster.wait_until(
        "two active runners in Prometheus",
        lambda: values(cluster, 'krnet_runners{status="active"}') == {"krnet-host": 2.0},
    )
    assert values(cluster, 'krnet_runners{status="inactive"}') == {"krnet-host": 0.0}
    assert values(cluster, "krnet_runner_ids_available") == {"krnet-host": 253.0}
    cluster.wait_until(
        "both tunnels up on the host and on each runner",
        lambda: (
            values(cluster, "krnet_tunnel_up")
            == {
                "krnet-host/1": 1.0,
                "krnet-host/2": 1.0,
                "krnet-runner/1": 1.0,
                "krnet-runner/2": 1.0,
            }
        ),
    )
    cluster.wait_until(
        "probe loss 0 through both tunnels, both ways",
        lambda: (
            values(cluster, "krnet_probe_loss_ratio")
            == {
                "krnet-host/1": 0.0,
                "krnet-host/2": 0.0,
                "krnet-runner/1": 0.0,
                "krnet-runner/2": 0.0,
            }
        ),
    )
    rtts = values(cluster, "krnet_probe_rtt_seconds")
    assert set(rtts) == {"krnet-host/1", "krnet-host/2", "krnet-runner/1", "krnet-runner/2"}
    assert all(0 < rtt < 1 for rtt in rtts.values()), rtts
    assert values(cluster, "krnet_joins_total")["krnet-host"] >= 2
    assert values(cluster, "krnet_heartbeats_total")["krnet-host"] > 0
    assert values(cluster, "krnet_bridge_present") == {"krnet-runner": 1.0}
    assert values(cluster, 'krnet_docker_network_present{network="kohakuriver-overlay"}') == {
        "krnet-runner": 1.0
    }
    assert len(query(cluster, "krnet_allocation_info")) == 2
    assert values(cluster, "krnet_ready") == {"krnet-host": 1.0, "krnet-runner": 1.0}
    assert len(query(cluster, "krnet_ready == 1")) == 3

    assert cluster.stop(cluster.nodes[1]) == 0  # the metrics listener stops with serve
    cluster.wait_until(
        "runner 2 inactive in Prometheus (runner_timeout is 5 s in the lab)",
        lambda: (
            values(cluster, 'krnet_runners{status="inactive"}') == {"krnet-host": 1.0}
            and values(cluster, 'krnet_runners{status="active"}') == {"krnet-host": 1.0}
        ),
        timeout=30,
    )
    assert values(cluster, "krnet_runner_last_seen_age_seconds")["krnet-host/2"] >= 5
    assert len(query(cluster, 'up{job="krnet-runner"} == 0')) == 1  # its endpoint stopped too
