"""The unit's capability set, proven: `krnet serve` under capsh with only those capabilities.

A host and one runner (no Docker: the runner's Docker socket needs no capability, root owns
it) run in lab namespaces with every capability but CAPABILITIES dropped from the bounding
set, so the processes hold exactly those. They must build every link, rule and probe; with
either one dropped too, the part that needs it fails, so the set is no larger than needed.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from krnet.commands.systemd import CAPABILITIES
from krnet.lab.cluster import Cluster, krnet_command
from tests.support import require_privileged

pytestmark = pytest.mark.privileged

CAP_BITS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}  # <linux/capability.h>


def capped(keep: Sequence[str]) -> list[str]:
    """A command prefix that runs what follows with only `keep` in its bounding set."""
    printed = subprocess.run(["capsh", "--print"], capture_output=True, text=True, check=True)
    line = next(line for line in printed.stdout.splitlines() if line.startswith("Bounding set"))
    drop = [cap for cap in line.partition("=")[2].split(",") if cap.upper() not in keep]
    return ["capsh", f"--drop={','.join(drop)}", "--", "-c", 'exec "$@"', "krnet"]


def cluster_with(tmp_path: Path, keep: Sequence[str]) -> Cluster:
    require_privileged("ip", "nsenter", "unshare", "iptables", "capsh")
    command = [*capped(keep), *krnet_command()]
    return Cluster(tmp_path, runners=1, with_docker=False, command=command)


def effective(cluster: Cluster) -> int:
    """The host's `krnet serve` effective capability mask (nsenter, capsh, sh all exec)."""
    assert cluster.host.serve is not None
    status = Path(f"/proc/{cluster.host.serve.pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)


def probes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    path = cluster.host.data_dir / "probes.json"
    if not path.exists():
        return {}
    results: dict[str, dict[str, Any]] = json.loads(path.read_text())["results"]
    return results


def links(cluster: Cluster, node: object) -> set[str]:
    names = node.node.run(["ip", "-j", "link"]).stdout  # type: ignore[attr-defined]
    return {link["ifname"] for link in json.loads(names)}


def test_serve_builds_everything_with_only_the_units_capabilities(tmp_path: Path) -> None:
    with cluster_with(tmp_path, CAPABILITIES) as cluster:
        cluster.start_all()
        cluster.wait_for_runners()
        assert effective(cluster) == sum(1 << CAP_BITS[cap] for cap in CAPABILITIES)
        assert {"kohaku-host", "vxkr1"} <= links(cluster, cluster.host)
        assert {"kohaku-overlay", "vxlan0"} <= links(cluster, cluster.nodes[0])
        for node in (cluster.host, cluster.nodes[0]):
            assert "-j KRNET-FORWARD" in node.node.run(["iptables-save", "-t", "filter"]).stdout
        forward = cluster.host.node.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout
        assert forward.strip() == "1"
        cluster.wait_until(
            "the hub's probe to get replies", lambda: probes(cluster)["1"]["received"] > 0
        )
        cluster.nodes[0].node.run(["ping", "-c", "2", "-W", "2", "10.0.0.1"])


@pytest.mark.parametrize(
    ("missing", "symptom"),
    [
        ("CAP_NET_ADMIN", "cannot set sysctl net.ipv4.ip_forward=1: Operation not permitted"),
        ("CAP_NET_RAW", "the DF probe needs a raw ICMP socket"),
    ],
)
def test_without_either_capability_serve_cannot_do_its_job(
    tmp_path: Path, missing: str, symptom: str
) -> None:
    with cluster_with(tmp_path, [cap for cap in CAPABILITIES if cap != missing]) as cluster:
        cluster.start(cluster.host)
        cluster.start(cluster.nodes[0])
        cluster.wait_until(
            f"the host to fail without {missing}",
            lambda: symptom in cluster.host.log.read_text(errors="replace"),
            timeout=60,
        )
