"""Direct mode's convergence: from a runner's join until every other runner has its route.

A lab cluster in namespaces (no Docker: routes are the kernel's, containers add nothing) with a
host in `overlay_mode = "direct"` and N runners running the real `krnet serve`. Runners 1..N-1
join first and converge; then, `--rounds` times, runner N joins (its `krnet serve` started with
no runner key, so it enrols afresh), and the time is taken from the host listing it active to
every other runner holding `10.N.0.0/16 dev vxkrd`; `krnet cleanup` on runner N (its `leave`)
then drops it again, timed the same way until no runner has the route. Polling every 20 ms
bounds the resolution. Bounded by --budget; everything is torn down on exit and on signals.

    sudo .venv/bin/python bench/convergence.py [--runners 10] [--rounds 3] [--budget 900]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from krnet.lab.cluster import Cluster
from krnet.lab.prerequisites import missing_prerequisites
from krnet.lab.processes import ClusterNode

POLL = 0.02
REQUIRED = ("ip", "nsenter", "unshare", "iptables")


def has_route(runner: ClusterNode, network: str) -> bool:
    """Whether the runner routes `network` through its VTEP now."""
    result = runner.node.run(["ip", "-j", "route", "show", "dev", "vxkrd"], check=False)
    if result.returncode != 0:
        return False
    return any(route.get("dst") == network for route in json.loads(result.stdout or "[]"))


def wait(what: str, condition: Callable[[], bool], bound: float = 120.0) -> float:
    """Poll `condition` every POLL seconds; the monotonic time it first held."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {bound:g} s")
        time.sleep(POLL)
    return time.monotonic()


def active(cluster: Cluster, count: int) -> bool:
    return bool(cluster.status().get("active") == count)


def host_tunnel(cluster: Cluster, runner_id: int) -> bool:
    """Whether the host has runner `runner_id`'s vxkrN: built at its join (before the welcome),
    removed at its leave; read from the kernel, so the clock starts within a poll of either."""
    link = ["ip", "link", "show", f"vxkr{runner_id}"]
    return cluster.host.node.run(link, check=False).returncode == 0


def one_round(cluster: Cluster, say: Callable[[str], None]) -> tuple[float, float]:
    """Runner N joins, then leaves: the seconds from the host's tunnel for it appearing (its
    join) until every other runner has its route, and from that tunnel going (its leave) until
    none has."""
    last, others, count = cluster.nodes[-1], cluster.nodes[:-1], len(cluster.nodes)
    network = f"10.{count}.0.0/16"
    cluster.start(last)
    joined = wait("the join", lambda: host_tunnel(cluster, count))
    learnt = max(wait(f"{r.name} learns", lambda r=r: has_route(r, network)) for r in others)
    cluster.stop(last)
    cleanup = threading.Thread(target=cluster.krnet, args=(last, "cleanup", "--yes"))
    cleanup.start()
    left = wait("the leave", lambda: not host_tunnel(cluster, count))
    gone = max(wait(f"{r.name} forgets", lambda r=r: not has_route(r, network)) for r in others)
    cleanup.join()
    say(f"joined -> all routed {learnt - joined:.3f} s; left -> all gone {gone - left:.3f} s")
    return learnt - joined, gone - left


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def benchmark(runners: int, rounds: int, budget: int, say: Callable[[str], None]) -> None:
    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(budget)
    with tempfile.TemporaryDirectory(prefix="krt-converge-") as workdir:
        cluster = Cluster(Path(workdir), runners=runners, with_docker=False, progress=say)
        try:
            cluster.build()
            cluster.write_config(cluster.host, overlay_mode="direct")
            cluster.start(cluster.host)
            for runner in cluster.nodes[:-1]:
                cluster.start(runner)
            wait("the first runners", lambda: active(cluster, runners - 1), 300)
            joins, leaves = zip(*(one_round(cluster, say) for _ in range(rounds)), strict=True)
        finally:
            signal.alarm(0)
            say("tearing down")
            cluster.close()
    print(
        f"direct-mode convergence, {runners} runners, {os.cpu_count()} CPUs, {rounds} rounds: "
        f"host tunnel up -> every other runner routed: median {statistics.median(joins):.3f} s "
        f"({', '.join(f'{value:.3f}' for value in joins)}); host tunnel gone -> every route gone: "
        f"median {statistics.median(leaves):.3f} s ({', '.join(f'{v:.3f}' for v in leaves)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=10, help="runners in all (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="joins and leaves (default 3)")
    parser.add_argument("--budget", type=int, default=900, help="give up after (default 900)")
    arguments = parser.parse_args()
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"convergence: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    benchmark(arguments.runners, arguments.rounds, arguments.budget, say)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
