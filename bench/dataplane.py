"""Data-plane throughput and latency: krnet's overlay beside the underlay and hand-built paths.

Five paths, each measured with the machine's own iperf3 (one TCP stream, receiver's rate) and
ping run inside the namespaces with `nsenter`:
  (a) overlay: a container on runner 1 -> a container on runner 2 through krnet (a lab cluster:
      host + 2 runners running the real `krnet serve`, a dockerd per runner, busybox containers);
  (b) underlay: runner 1's namespace -> runner 2's namespace directly (192.0.2.x), same cluster;
  (c) hand-built: the same shape built with plain `ip` commands in a lab of its own (host with
      kohaku-host and one vxkrN per runner; each runner a bridge, vxlan0 in it, a veth
      "container" namespace on the bridge; the reference's routes; no iptables, no krnet);
  (d) direct: the same containers as (a), runner 1 -> runner 2 VTEP to VTEP. The cluster's host
      runs `overlay_mode = "direct"`; for (a) the pair is put on the hub the way krnet does it
      when their UDP is blocked (a raw DROP on runner 1, waited for until both ends dropped
      the direct route), for (d) the block goes and the route comes back.
  (e) hand-built direct: (c)'s containers over a VTEP per runner with the other's forwarding
      entry, neighbour and route, as direct mode builds them: (e) / (c) is what the topology
      itself gains on this kernel, with no netfilter, Docker or krnet in the path.
Runs are interleaved (a, b, d, c, e, a, ...) so background load hits every path alike.
Around each run it counts the packets the host's tunnels received and the CPU time of the
host's `krnet serve`. Prints the median Gbit/s of the runs, the median ping RTT, the ratios.
Bounded by --budget seconds; everything is torn down on exit, on error, on Ctrl-C and on SIGTERM.

    sudo .venv/bin/python bench/dataplane.py [--runs 3] [--seconds 5] [--budget 900]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from krnet.lab import proofs  # noqa: E402
from krnet.lab.cluster import Cluster, ClusterNode  # noqa: E402
from krnet.lab.namespaces import NETNS_DIR, Lab, LabError, Node, remove_namespace, stop_processes  # noqa: E402
from krnet.lab.prerequisites import missing_prerequisites  # noqa: E402

IPERF_PORT = 5201
PINGS = 30
MTU = 1450
VNI_BASE = 100
HOST_UNDERLAY = "192.0.2.1"
REQUIRED = (
    "ip",
    "nsenter",
    "unshare",
    "iptables",
    "ss",
    "dockerd",
    "docker",
    "busybox",
    "iperf3",
    "ping",
)


@dataclass(frozen=True)
class Endpoint:
    """A network namespace to run iperf3 and ping in, and the address others reach it at."""

    name: str
    enter: tuple[str, ...]  # argv prefix that runs a command inside its namespace
    address: str

    def command(self, *argv: str) -> list[str]:
        return [*self.enter, *argv]


@dataclass
class Measurement:
    """One path: its label, its two ends, the throughput of each run and its ping RTTs."""

    label: str
    source: Endpoint
    target: Endpoint
    gbits: list[float] = field(default_factory=list)
    rtts_ms: list[float] = field(default_factory=list)
    enter: Callable[[], None] = lambda: None  # puts the cluster in this path's state
    host_packets: list[int] = field(default_factory=list)  # the host's tunnels, per run
    host_cpu: list[float] = field(default_factory=list)  # seconds of the host's krnet serve

    @property
    def median_gbits(self) -> float:
        return statistics.median(self.gbits)

    @property
    def median_rtt_ms(self) -> float:
        return statistics.median(self.rtts_ms)


def run(argv: Sequence[str], timeout: float) -> str:
    """Run a command to completion; its stdout, or an error naming the command."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout)[-400:]}")
    return result.stdout


def namespace_endpoint(name: str, ns: str, address: str) -> Endpoint:
    return Endpoint(name, ("nsenter", f"--net={NETNS_DIR / ns}", "--"), address)


def container_endpoint(cluster: Cluster, runner: ClusterNode, container: str) -> Endpoint:
    pid = proofs.container_pid(cluster, runner, container)
    address = cluster.containers[container]
    return Endpoint(f"{container}@{runner.name}", ("nsenter", "-t", str(pid), "-n", "--"), address)


# -- measuring ------------------------------------------------------------------------------


def start_server(target: Endpoint) -> subprocess.Popen[bytes]:
    """An iperf3 server in `target`'s namespace, listening; the caller stops it."""
    server = subprocess.Popen(
        target.command("iperf3", "-s", "-p", str(IPERF_PORT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_listening(server, target)
    except BaseException:
        stop_processes([server])
        raise
    return server


def wait_listening(server: subprocess.Popen[bytes], target: Endpoint) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"iperf3 server in {target.name} exited with {server.returncode}")
        listening = run(target.command("ss", "-Hltn", f"sport = :{IPERF_PORT}"), timeout=10)
        if listening.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"iperf3 server in {target.name} is not listening after 10 s")


def throughput(path: Measurement, seconds: int) -> float:
    """One iperf3 run (first second omitted: slow start); the receiver's Gbit/s."""
    output = run(
        path.source.command(
            "iperf3",
            "-c",
            path.target.address,
            "-p",
            str(IPERF_PORT),
            "-t",
            str(seconds),
            "-O",
            "1",
            "-J",
        ),
        timeout=seconds + 30,
    )
    report = json.loads(output)
    if "error" in report:
        raise RuntimeError(f"iperf3 {path.label}: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def round_trips(path: Measurement) -> list[float]:
    """PINGS pings 50 ms apart; each reply's RTT in ms (every reply must come back)."""
    result = subprocess.run(
        path.source.command(
            "ping", "-n", "-c", str(PINGS), "-i", "0.05", "-W", "2", path.target.address
        ),
        capture_output=True,
        text=True,
        timeout=PINGS + 30,
    )
    rtts = [float(value) for value in re.findall(r"time=([\d.]+) ms", result.stdout)]
    if result.returncode != 0 or len(rtts) != PINGS:
        raise RuntimeError(
            f"ping {path.label}: {len(rtts)}/{PINGS} replies: {result.stdout[-300:]}"
        )
    return rtts


def measure(
    paths: list[Measurement],
    runs: int,
    seconds: int,
    say: Callable[[str], None],
    host: HostLoad,
) -> None:
    for number in range(1, runs + 1):
        for path in paths:
            path.enter()
            before, cpu = host.packets(), host.cpu_seconds()
            path.gbits.append(throughput(path, seconds))
            path.host_packets.append(host.packets() - before)
            path.host_cpu.append(host.cpu_seconds() - cpu)
            say(
                f"run {number}/{runs} {path.label}: {path.gbits[-1]:.2f} Gbit/s, "
                f"the host's tunnels received {path.host_packets[-1]} packets, its krnet "
                f"serve used {path.host_cpu[-1]:.2f} s of CPU"
            )
    for path in paths:
        path.enter()
        path.rtts_ms = round_trips(path)
        say(f"ping {path.label}: median {path.median_rtt_ms:.3f} ms")


# -- the labs -------------------------------------------------------------------------------


def krnet_cluster(workdir: Path, say: Callable[[str], None]) -> Cluster:
    """A running lab cluster (host in direct mode + 2 runners, dockerds) with a container on
    each runner."""
    cluster = Cluster(workdir, runners=2, progress=say)
    try:
        cluster.build()
        cluster.write_config(cluster.host, overlay_mode="direct")
        cluster.start_all()
        cluster.wait_for_runners()
        for index, runner in enumerate(cluster.nodes, start=1):
            cluster.run_container(runner, f"c{index}")
    except BaseException:
        cluster.close()
        raise
    return cluster


def krnet_paths(cluster: Cluster) -> tuple[Measurement, Measurement, Measurement]:
    """(a) container to container through the hub, (b) runner to runner on the underlay,
    (d) the same containers direct."""
    first, second = cluster.nodes
    ends = (container_endpoint(cluster, first, "c1"), container_endpoint(cluster, second, "c2"))
    pair = PairPath(cluster)
    overlay = Measurement("(a) krnet hub", *ends, enter=pair.hub)
    underlay = Measurement(
        "(b) underlay",
        namespace_endpoint("r1", first.node.ns, first.node.address),
        namespace_endpoint("r2", second.node.ns, second.node.address),
        enter=pair.direct,
    )
    return overlay, underlay, Measurement("(d) krnet direct", *ends, enter=pair.direct)


class PairPath:
    """Runners 1 and 2 on the hub (their VXLAN blocked, as a firewall would) or direct."""

    def __init__(self, cluster: Cluster) -> None:
        self.first, self.second = cluster.nodes
        self.block = ["PREROUTING", "-s", self.second.node.address, "-p", "udp", "--dport",
                      "4789", "-j", "DROP"]  # fmt: skip
        self.blocked = False

    def hub(self) -> None:
        if not self.blocked:
            self.first.node.run(["iptables", "-w", "-t", "raw", "-I", *self.block])
            self.blocked = True
        self._until(routed=False)

    def direct(self) -> None:
        if self.blocked:
            self.first.node.run(["iptables", "-w", "-t", "raw", "-D", *self.block])
            self.blocked = False
        self._until(routed=True)

    def _until(self, *, routed: bool) -> None:
        """Until both ends hold (or both lack) the other's direct route (three probes)."""
        deadline = time.monotonic() + 120
        ends = ((self.first, "10.2.0.0/16"), (self.second, "10.1.0.0/16"))
        while any(direct_route(node, network) != routed for node, network in ends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pair did not go {'direct' if routed else 'hub'}")
            time.sleep(0.2)


def direct_route(runner: ClusterNode, network: str) -> bool:
    listed = runner.node.run(["ip", "-j", "route", "show", "dev", "vxkrd"], check=False)
    return any(route.get("dst") == network for route in json.loads(listed.stdout or "[]"))


class HostLoad:
    """What the host forwards: packets its vxkrN tunnels received, and krnet serve's CPU."""

    def __init__(self, cluster: Cluster) -> None:
        self.host = cluster.host

    def packets(self) -> int:
        links = json.loads(self.host.node.run(["ip", "-j", "-s", "link", "show"]).stdout)
        return sum(
            link["stats64"]["rx"]["packets"]
            for link in links
            if link["ifname"].startswith("vxkr") and link["ifname"] != "vxkrd"
        )

    def cpu_seconds(self) -> float:
        assert self.host.serve is not None
        fields = Path(f"/proc/{self.host.serve.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hand_built(lab: Lab) -> tuple[Measurement, Measurement]:
    """(c) the reference's shape with plain `ip` commands: no krnet, no iptables; (e) the same
    containers over a hand-built direct path, each runner a VTEP `vxkrd` with the other's
    forwarding entry, neighbour and route, as direct mode builds them (the route is what
    switches a pair between the two, as in krnet)."""
    containers, runners = hand_built_hub(lab)
    routes = [hand_built_vtep(runner, index, runners) for index, runner in enumerate(runners, 1)]

    def routed(direct: bool) -> Callable[[], None]:
        def enter() -> None:
            for runner, route in routes:
                if direct:
                    ip(runner, "route", "replace", *route)
                elif _has_route(runner, route[0]):
                    ip(runner, "route", "del", *route)

        return enter

    hub = Measurement("(c) hand-built hub", *containers, enter=routed(False))
    return hub, Measurement("(e) hand-built direct", *containers, enter=routed(True))


def hand_built_vtep(runner: Node, index: int, runners: list[Node]) -> tuple[Node, list[str]]:
    """Runner `index`'s VTEP and its entries for the other runner; the route it takes."""
    (other,) = [node for node in runners if node is not runner]
    other_index = 3 - index
    mac, other_mac = f"02:4b:52:00:00:{index:02x}", f"02:4b:52:00:00:{other_index:02x}"
    ip(runner, "link", "add", "vxkrd", "mtu", str(MTU), "address", mac, "type", "vxlan", "id",
       str(VNI_BASE), "local", runner.address, "dstport", "4789", "nolearning")  # fmt: skip
    ip(runner, "addr", "add", f"10.{index}.0.0/32", "dev", "vxkrd")
    ip(runner, "link", "set", "vxkrd", "up")
    gateway = f"10.{other_index}.0.0"
    runner.run(["bridge", "fdb", "append", other_mac, "dev", "vxkrd", "dst", other.address])
    ip(runner, "neigh", "replace", gateway, "lladdr", other_mac, "dev", "vxkrd", "nud", "permanent")
    return runner, [f"10.{other_index}.0.0/16", "via", gateway, "dev", "vxkrd", "onlink"]


def _has_route(node: Node, network: str) -> bool:
    return bool(node.run(["ip", "route", "show", network, "dev", "vxkrd"]).stdout.strip())


def hand_built_hub(lab: Lab) -> tuple[list[Endpoint], list[Node]]:
    """The reference's shape with plain `ip` commands: no krnet, no iptables; its containers
    and runners."""
    host = lab.add_node("host", f"{HOST_UNDERLAY}/24")
    ip(host, "link", "add", "kohaku-host", "type", "bridge")
    ip(host, "addr", "add", "10.0.0.1/8", "dev", "kohaku-host")
    ip(host, "link", "set", "kohaku-host", "up")
    host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    containers, runners = [], []
    for index in (1, 2):
        runner = lab.add_node(f"r{index}", f"192.0.2.{10 + index}/24")
        vni = str(VNI_BASE + index)
        tunnel = f"vxkr{index}"
        vxlan(host, tunnel, vni, HOST_UNDERLAY, runner.address)
        ip(host, "addr", "add", f"10.{index}.0.254/16", "dev", tunnel)
        ip(host, "link", "set", tunnel, "up")
        ip(runner, "link", "add", "kohaku-overlay", "mtu", str(MTU), "type", "bridge")
        ip(runner, "addr", "add", f"10.{index}.0.1/16", "dev", "kohaku-overlay")
        ip(runner, "link", "set", "kohaku-overlay", "up")
        vxlan(runner, "vxlan0", vni, runner.address, HOST_UNDERLAY)
        ip(runner, "link", "set", "vxlan0", "master", "kohaku-overlay", "up")
        ip(runner, "route", "add", "10.0.0.0/8", "via", f"10.{index}.0.254")
        runner.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        containers.append(veth_container(lab, runner, index))
        runners.append(runner)
    return containers, runners


def ip(node: Node, *argv: str) -> None:
    node.run(["ip", *argv])


def vxlan(node: Node, name: str, vni: str, local: str, remote: str) -> None:
    ip(node, "link", "add", name, "mtu", str(MTU), "type", "vxlan", "id", vni, "local", local,
       "remote", remote, "dstport", "4789", "nolearning")  # fmt: skip


def veth_container(lab: Lab, runner: Node, index: int) -> Endpoint:
    """A namespace on the runner's bridge as Docker would plug one in: 10.N.0.2, via 10.N.0.1."""
    ns = f"{lab.prefix}c{index}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    lab.callback(lambda: _remove(ns))
    address = f"10.{index}.0.2"
    peer = ["peer", "name", "eth0", "netns", ns, "mtu", str(MTU)]
    ip(runner, "link", "add", f"veth{index}", "mtu", str(MTU), "type", "veth", *peer)
    ip(runner, "link", "set", f"veth{index}", "master", "kohaku-overlay", "up")
    inside = ("ip", "-n", ns)
    run([*inside, "addr", "add", f"{address}/16", "dev", "eth0"], timeout=10)
    run([*inside, "link", "set", "eth0", "up"], timeout=10)
    run([*inside, "link", "set", "lo", "up"], timeout=10)
    run([*inside, "route", "add", "default", "via", f"10.{index}.0.1"], timeout=10)
    return namespace_endpoint(f"c{index}", ns, address)


def _remove(ns: str) -> None:
    failures = remove_namespace(ns)
    if failures:
        raise LabError("; ".join(failures))


# -- the report -----------------------------------------------------------------------------


def report(paths: list[Measurement], runs: int, seconds: int) -> None:
    overlay, underlay, direct, hand_built, hand_direct = paths
    print()
    print(
        f"krnet data plane: {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"{run(['iperf3', '--version'], 10).split(chr(10))[0]}, one TCP stream, "
        f"median of {runs} runs of {seconds} s; ping: median of {PINGS}"
    )
    print_paths(paths, width=22)
    print(
        f"  overlay / underlay:    throughput {ratio(overlay, underlay)}, "
        f"RTT {overlay.median_rtt_ms / underlay.median_rtt_ms:.2f}x"
    )
    print(
        f"  krnet / hand-built:    throughput {ratio(overlay, hand_built)}, "
        f"RTT {overlay.median_rtt_ms / hand_built.median_rtt_ms:.2f}x"
    )
    print(
        f"  direct / hub:          throughput {ratio(direct, overlay)}, "
        f"RTT {direct.median_rtt_ms / overlay.median_rtt_ms:.2f}x; the host's tunnels "
        f"received {max(direct.host_packets)} packets at most in a direct run, "
        f"{min(overlay.host_packets)} at least in a hub run; its krnet serve used at most "
        f"{max(direct.host_cpu):.2f} s of CPU in a {seconds} s direct run"
    )
    print(
        f"  hand-built direct / hand-built hub: throughput {ratio(hand_direct, hand_built)}, "
        f"RTT {hand_direct.median_rtt_ms / hand_built.median_rtt_ms:.2f}x (the topology's own "
        "gain on this kernel, with no netfilter, Docker or krnet)"
    )


def print_paths(paths: list[Measurement], width: int) -> None:
    """One line per path: median Gbit/s, every run's, and the median round trip."""
    for path in paths:
        runs_text = ", ".join(f"{value:.2f}" for value in path.gbits)
        print(
            f"  {path.label:{width}} {path.median_gbits:6.2f} Gbit/s  ({runs_text})   "
            f"RTT {path.median_rtt_ms:.3f} ms"
        )


def ratio(numerator: Measurement, denominator: Measurement) -> str:
    return f"{numerator.median_gbits / denominator.median_gbits:.2f}"


# -- main -----------------------------------------------------------------------------------


class OutOfTime(Exception):
    """The benchmark ran past its --budget."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise OutOfTime("ran past its --budget; everything was torn down")
    raise SystemExit(128 + signum)


def benchmark(
    runs: int, seconds: int, budget: int, say: Callable[[str], None]
) -> list[Measurement]:
    """Build both labs, measure every path, tear everything down (the budget covers all but
    the teardown, which has bounded waits of its own)."""
    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(budget)
    with (
        tempfile.TemporaryDirectory(prefix="krt-dataplane-") as workdir,
        contextlib.ExitStack() as stack,
    ):
        try:
            cluster = krnet_cluster(Path(workdir) / "cluster", say)
            stack.callback(cluster.close)
            lab = stack.enter_context(Lab())
            say(f"building the hand-built hub and direct path ({lab.prefix}*)")
            overlay, underlay, direct = krnet_paths(cluster)
            paths = [overlay, underlay, direct, *hand_built(lab)]
            servers: list[subprocess.Popen[bytes]] = []
            stack.callback(stop_processes, servers)
            for path in {id(path.target): path for path in paths}.values():
                servers.append(start_server(path.target))
            measure(paths, runs, seconds, say, HostLoad(cluster))
        finally:
            signal.alarm(0)
            say("tearing down")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per path (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="length of a run (default 5)")
    parser.add_argument(
        "--budget", type=int, default=900, help="give up and tear down after this (default 900)"
    )
    arguments = parser.parse_args()
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"dataplane: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        paths = benchmark(arguments.runs, arguments.seconds, arguments.budget, say)
    except (OutOfTime, RuntimeError, LabError, subprocess.SubprocessError) as error:
        print(f"dataplane: {error}", file=sys.stderr)
        return 1
    report(paths, arguments.runs, arguments.seconds)
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
