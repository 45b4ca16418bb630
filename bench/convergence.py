"""Direct mode's convergence: from a runner's join until every other runner has its route.

A lab cluster in namespaces (no Docker: routes are the kernel's, containers add nothing), the
host in `overlay_mode = "direct"`, every node on the product's default timers. The joiner
(runner N) and `--real` other runners run the real `krnet serve`; the rest are
bench/simrunner.py's simulated runners in one namespace, which join, heartbeat and follow the
peer table over the real protocol but build nothing in a kernel (254 agents of about 70 MiB
each do not fit this machine, and on two cores they would time the cores, not the push).

The others join first and converge; then, `--rounds` times, runner N joins (its `krnet serve`
started with no runner key, so it enrols afresh) and leaves again (`krnet cleanup`, its
authenticated `leave`). Times come from the kernel and the wire, each stamped as it arrives on
the clock every process shares (CLOCK_MONOTONIC): `ip -o monitor` in the host (runner N's
`vxkrN` appears, built during the join before the welcome: the clock starts; it goes: the
leave's clock starts) and in every real runner (`10.N.0.0/16 dev vxkrd` added, deleted); each
simulated runner stamps the pushed table that newly holds, or newly lacks, runner N as it reads
it. Bounded by --budget; everything is torn down on exit and on signals.

    sudo .venv/bin/python bench/convergence.py [--runners 10] [--real 9] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from scalelab import READY, SIM_UNDERLAY, TIMERS, Fleet, claimed_address  # noqa: E402

from krnet.core.model.settings import Settings  # noqa: E402
from krnet.lab.cluster import Cluster  # noqa: E402
from krnet.lab.namespaces import Node, stop_processes  # noqa: E402
from krnet.lab.prerequisites import missing_prerequisites  # noqa: E402

POLL = 0.01
BOUND = 120.0  # seconds any one step may take before the run is abandoned
MARK = "198.19.255.254/32"  # an unreachable route added and deleted: the monitor is listening
REQUIRED = ("ip", "nsenter", "unshare", "iptables")
Say = Callable[[str], None]


class Watch:
    """`ip -o monitor link route` in one node, every line stamped as it arrives."""

    def __init__(self, node: Node) -> None:
        self.node = node
        argv = ["ip", "-o", "monitor", "link", "route"]
        self.process = node.popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._mark()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def _mark(self) -> None:
        """Add and delete a marker route until the monitor prints it (a monitor just started
        may not be listening yet)."""
        deadline = time.monotonic() + BOUND
        while not any(MARK.split("/")[0] in line for _, line in self.lines):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ip monitor in {self.node.name} never reported {MARK}")
            for verb in ("add", "del"):
                self.node.run(["ip", "route", verb, "unreachable", MARK])
            time.sleep(0.1)

    def first(self, what: str, matches: Callable[[str], bool], after: float) -> float:
        """The stamp of the first line since `after` that `matches`; waits for it."""
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            for stamp, line in self.lines[:]:
                if stamp >= after and matches(line):
                    return stamp
            time.sleep(POLL)
        raise TimeoutError(f"{what}: not within {BOUND:g} s")

    def close(self) -> None:
        stop_processes([self.process])


def tunnel(runner_id: int, *, added: bool) -> Callable[[str], bool]:
    """A monitor line saying the host's tunnel to `runner_id` was made (or deleted)."""
    name = f"vxkr{runner_id}:"
    return lambda line: name in line.split() and line.startswith("Deleted") != added


def direct_route(runner_id: int, *, added: bool) -> Callable[[str], bool]:
    """A monitor line saying the direct route to `runner_id` was added (or deleted)."""
    network = f"10.{runner_id}.0.0/16 "
    wanted = network if added else f"Deleted {network}"
    return lambda line: line.startswith(wanted) and " dev vxkrd " in line


@dataclass(frozen=True)
class Spread:
    """Seconds from the host's event to each other runner's: real runners, simulated ones."""

    real: list[float]
    simulated: list[float]

    @property
    def last(self) -> float:
        return max(self.real + self.simulated)


def simulated_times(
    fleet: Fleet | None, runner_id: int, after: float, *, added: bool
) -> list[float]:
    """Each simulated runner's stamp for runner `runner_id` (gained, or lost), once all have one
    since `after`."""
    deadline = time.monotonic() + BOUND
    while fleet is not None:
        appeared, gone = fleet.seen(runner_id)
        stamps = appeared if added else gone
        if all(stamp is not None and stamp >= after for stamp in stamps):
            return [float(stamp) for stamp in stamps if stamp is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"simulated runners never {'learnt' if added else 'forgot'}")
        time.sleep(0.05)
    return []


def spread(
    start: float, watches: Sequence[Watch], fleet: Fleet | None, runner_id: int, *, added: bool
) -> Spread:
    """Every other runner's time for runner `runner_id`'s route, from `start`."""
    matches = direct_route(runner_id, added=added)
    real = [watch.first(f"{watch.node.name}", matches, start) - start for watch in watches]
    simulated = simulated_times(fleet, runner_id, start, added=added)
    return Spread(real, [stamp - start for stamp in simulated])


def one_round(
    cluster: Cluster, host: Watch, watches: Sequence[Watch], fleet: Fleet | None, say: Say
) -> tuple[Spread, Spread]:
    """Runner N joins, then leaves: each other runner's seconds from the host's tunnel for it
    appearing (its join) until it holds the route, and from that tunnel going (its leave)
    until it has dropped it."""
    last = cluster.nodes[-1]
    runner_id = len(cluster.nodes) + (0 if fleet is None else len(fleet.addresses))
    begun = time.monotonic()
    cluster.start(last)
    joined = host.first("the join", tunnel(runner_id, added=True), begun)
    learnt = spread(joined, watches, fleet, runner_id, added=True)
    begun = time.monotonic()
    cluster.stop(last)
    cleanup = threading.Thread(target=cluster.krnet, args=(last, "cleanup", "--yes"))
    cleanup.start()
    left = host.first("the leave", tunnel(runner_id, added=False), begun)
    forgot = spread(left, watches, fleet, runner_id, added=False)
    cleanup.join()
    say(f"join -> every runner routed {learnt.last:.3f} s; leave -> none {forgot.last:.3f} s")
    return learnt, forgot


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def benchmark(runners: int, real: int, rounds: int, budget: int, say: Say) -> None:
    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(budget)
    defaults = Settings()
    timers = {name: getattr(defaults, name) for name in (*TIMERS, "probe_interval")}
    simulated = runners - 1 - real
    with tempfile.TemporaryDirectory(prefix="krt-converge-") as workdir:
        cluster = Cluster(
            Path(workdir), runners=real + 1, with_docker=False, settings=timers, progress=say
        )
        watches: list[Watch] = []
        fleet: Fleet | None = None
        try:
            cluster.build()
            cluster.write_config(cluster.host, overlay_mode="direct")
            cluster.start(cluster.host)
            cluster.wait_until("the host to listen", lambda: READY in cluster.host.log.read_text())
            if simulated:
                node = cluster.lab.add_node("sim", f"{SIM_UNDERLAY}/24", hostname="krnet-sim")
                claims = [claimed_address(index) for index in range(1, simulated + 1)]
                fleet = Fleet(node, cluster.token, claims)
                say(f"{simulated} simulated runners joining")
                joined = fleet.join()
                if joined.errors:
                    raise RuntimeError(f"simulated joins failed: {joined.errors[:3]}")
            for runner in cluster.nodes[:-1]:
                cluster.start(runner)
            cluster.wait_until(
                f"{runners - 1} runners active",
                lambda: cluster.status().get("active") == runners - 1,
                300,
            )
            host = Watch(cluster.host.node)
            watches = [host, *(Watch(runner.node) for runner in cluster.nodes[:-1])]
            results = [one_round(cluster, host, watches[1:], fleet, say) for _ in range(rounds)]
        finally:
            signal.alarm(0)
            say("tearing down")
            for watch in watches:
                watch.close()
            if fleet is not None:
                fleet.stop()
            cluster.close()
    report(runners, real, simulated, results)


def report(runners: int, real: int, simulated: int, results: list[tuple[Spread, Spread]]) -> None:
    print(
        f"direct-mode convergence, {runners} runners ({real} others real, {simulated} simulated), "
        f"{os.cpu_count()} CPUs, {len(results)} rounds:"
    )
    for index, event in enumerate(("join -> routed", "leave -> gone")):
        spreads = [pair[index] for pair in results]
        lasts = [item.last for item in spreads]
        real_lasts = [max(item.real) for item in spreads]
        simulated_spreads = [item.simulated for item in spreads if item.simulated]
        line = (
            f"  {event:15} every runner: median {statistics.median(lasts):.3f} s "
            f"({_series(lasts)}); the real runners' last: {_series(real_lasts)}"
        )
        if simulated_spreads:
            simulated_lasts = [max(each) for each in simulated_spreads]
            simulated_medians = [statistics.median(each) for each in simulated_spreads]
            simulated_firsts = [min(each) for each in simulated_spreads]
            line += (
                f"; the simulated runners' first: {_series(simulated_firsts)}, "
                f"median: {_series(simulated_medians)}, last: {_series(simulated_lasts)}"
            )
        print(line)


def _series(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=10, help="runners in all (default 10)")
    parser.add_argument(
        "--real", type=int, help="other runners running krnet serve (default: up to 9)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="joins and leaves (default 3)")
    parser.add_argument("--budget", type=int, default=900, help="give up after (default 900)")
    arguments = parser.parse_args()
    real = min(arguments.runners - 1, 9) if arguments.real is None else arguments.real
    if not 2 <= arguments.runners <= 255 or not 1 <= real < arguments.runners:
        parser.error("--runners 2..255 and --real 1..runners-1")
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"convergence: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    benchmark(arguments.runners, real, arguments.rounds, arguments.budget, say)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
