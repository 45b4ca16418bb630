"""Direct mode's data path beside the hub's, on the same namespaces, interleaved in one run.

The lab is bench/dataplane.py's hand-built hub (host with kohaku-host and vxkr1/vxkr2; each
runner a bridge with vxlan0, the reference's routes, a veth "container" on the bridge; no
iptables). Three paths, measured with iperf3 and ping as bench/dataplane.py does:
  (d) direct: container 1 -> container 2 with krnet's `DirectPlane` built on both runners
      (`vxkrd`, the peer's neighbour, FDB entry and route: runner 1 -> runner 2 directly);
  (c) hub: the same containers with `vxkrd` withdrawn (runner 1 -> host -> runner 2);
  (b) underlay: runner 1's namespace -> runner 2's.
Each run toggles direct mode for its path, so the paths alternate (d, c, b, d, c, b, ...) and
background load hits them alike. The host's vxkr1 receive counter is read around every direct
run: a direct packet never reaches the host. Prints medians and the direct / hub ratios.

    sudo .venv/bin/python bench/direct.py [--runs 3] [--seconds 5]

With `--peers N [N ...]` it measures instead what a peer table of N costs one runner's
`DirectPlane.ensure` (build, a pass that changes nothing, one peer more, one less: what a
pushed table costs a runner on a join or a leave), each against its floor in the same namespace
and process: iproute2 reading the same entries (`ip neigh`/`bridge fdb`/`ip route show dev
vxkrd`) for the pass that changes nothing, building or deleting them with `ip -batch` and
`bridge -batch` for the others; and one full netlink dump (links, addresses, routes) with those
peers' routes in it, for scale.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import dataplane  # noqa: E402  (bench/dataplane.py: the hub lab and the measuring)

from krnet.lab.namespaces import Lab, Node, stop_processes  # noqa: E402
from krnet.lab.prerequisites import missing_prerequisites  # noqa: E402

# Runs inside a runner's namespace: build (argv "on") or withdraw ("off") its direct plane.
TOGGLE = """
import sys, types
from krnet.core.dataplane.direct_plane import DirectPlane
from krnet.core.dataplane.netlink import Netlink
from krnet.core.model.peers import Peer
from krnet.core.model.settings import Settings
me, peer, on = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "on"
plane = DirectPlane(Settings().plan(), Netlink())
held = types.SimpleNamespace(
    runner_id=me, runner_physical_ip=f"192.0.2.{10 + me}", vxlan_port=4789, mtu=1450,
    host_overlay_ip="10.0.0.1", overlay_cidr="10.0.0.0/8", subnet=f"10.{me}.0.0/16", vxlan_id=100,
)
print(plane.ensure(held, [Peer(peer, f"192.0.2.{10 + peer}")]) if on else plane.withdraw())
"""
# Runs inside a runner's namespace: the cost of a peer table of argv[1] peers, in seconds, and
# its floor: iproute2 reading the same entries, and building them with `ip -batch`/`bridge -batch`.
SCALE = """
import json, subprocess, sys, time, types
from krnet.core.dataplane.direct_plane import DirectPlane
from krnet.core.dataplane.netlink import Netlink, open_netlink, read_kernel_state
from krnet.core.model.peers import Peer, vtep_mac
from krnet.core.model.settings import Settings
held = types.SimpleNamespace(
    runner_id=1, runner_physical_ip="192.0.2.11", vxlan_port=4789, mtu=1450,
    host_overlay_ip="10.0.0.1", overlay_cidr="10.0.0.0/8", subnet="10.1.0.0/16", vxlan_id=100,
)
peers = [Peer(rid, f"192.0.3.{rid}") for rid in range(2, int(sys.argv[1]) + 2)]
plane = DirectPlane(Settings().plan(), Netlink())
def timed(step):
    started = time.perf_counter()
    step()
    return time.perf_counter() - started
def dump():
    with open_netlink() as ipr:
        read_kernel_state(ipr)
def run(*argv, stdin=""):
    subprocess.run(argv, input=stdin, text=True, check=True, stdout=subprocess.DEVNULL)
def read():
    for argv in (["ip", "neigh"], ["bridge", "fdb"], ["ip", "route"]):
        run(*argv, "show", "dev", "vxkrd")
def batch(table, verb="replace"):
    ip = "".join(
        f"neigh {verb} 10.{p.runner_id}.0.0 lladdr {vtep_mac(p.runner_id)} dev vxkrd "
        "nud permanent\\n"
        f"route {verb} 10.{p.runner_id}.0.0/32 dev vxkrd scope link\\n"
        f"route {verb} 10.{p.runner_id}.0.0/16 via 10.{p.runner_id}.0.0 dev vxkrd onlink\\n"
        for p in table
    )
    fdb = "".join(
        f"fdb {'del' if verb == 'del' else 'append'} {vtep_mac(p.runner_id)} dev vxkrd "
        f"dst {p.physical_ip} self permanent\\n"
        for p in table
    )
    run("ip", "-batch", "-", stdin=ip)
    run("bridge", "-batch", "-", stdin=fdb)
dump()  # the warm-up: pyroute2 imported, its socket code run once
spent = {
    "build": timed(lambda: plane.ensure(held, peers[:-1])),
    "again": timed(lambda: plane.ensure(held, peers[:-1])),
    "one more": timed(lambda: plane.ensure(held, peers)),
    "one less": timed(lambda: plane.ensure(held, peers[:-1])),
}
spent["dump"] = min(timed(dump) for _ in range(5))  # with every peer's routes in the table
floor = {"again": timed(read)}
plane.ensure(held, [])  # the bare VTEP: the floor builds the same entries on it
floor["build"] = timed(lambda: batch(peers[:-1]))
floor["one more"] = timed(lambda: batch(peers[-1:]))
floor["one less"] = timed(lambda: batch(peers[-1:], "del"))
print(json.dumps({"krnet": spent, "floor": floor}))
"""
REQUIRED = ("ip", "nsenter", "iperf3", "ping", "ss")


def toggle(runners: list[Node], on: bool) -> None:
    """Direct mode on or off on both runners (each names the other as its peer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for me, node in enumerate(runners, start=1):
        argv = [sys.executable, "-c", TOGGLE, str(me), str(3 - me), "on" if on else "off"]
        node.run(argv, env=env)


def packets(node: Node, link: str, direction: str) -> int:
    """A link's packet counter ("rx" or "tx")."""
    (shown,) = json.loads(node.run(["ip", "-j", "-s", "link", "show", "dev", link]).stdout)
    return int(shown["stats64"][direction]["packets"])


def direct_run(lab: Lab, measure: Callable[[], object]) -> tuple[int, int]:
    """Measure with direct mode on; (packets runner 1 sent out of vxkrd, packets the host's
    vxkr1 received meanwhile): a direct packet never reaches the host."""
    runner, host = lab.nodes["r1"], lab.nodes["host"]
    toggle([runner, lab.nodes["r2"]], on=True)
    sent, received = packets(runner, "vxkrd", "tx"), packets(host, "vxkr1", "rx")
    measure()
    return packets(runner, "vxkrd", "tx") - sent, packets(host, "vxkr1", "rx") - received


def benchmark(runs: int, seconds: int) -> tuple[list[dataplane.Measurement], list[tuple[int, int]]]:
    """Every path measured `runs` times, interleaved; the host's packets during direct runs."""
    with Lab() as lab, contextlib.ExitStack() as stack:
        hub = dataplane.hand_built_hub(lab)
        hub.label = "(c) hub"
        runners = [lab.nodes["r1"], lab.nodes["r2"]]
        for node in runners:  # as krnet's runner plane sets them in both modes (issue #15)
            for device in ("all", "default", "kohaku-overlay"):
                node.run(["sysctl", "-qw", f"net.ipv4.conf.{device}.send_redirects=0"])
        direct = dataplane.Measurement("(d) direct", hub.source, hub.target)
        underlay = dataplane.Measurement(
            "(b) underlay",
            dataplane.namespace_endpoint("r1", runners[0].ns, runners[0].address),
            dataplane.namespace_endpoint("r2", runners[1].ns, runners[1].address),
        )
        servers = [dataplane.start_server(hub.target), dataplane.start_server(underlay.target)]
        stack.callback(stop_processes, servers)
        crossed = []
        for number in range(1, runs + 1):
            crossed.append(
                direct_run(lab, lambda: direct.gbits.append(dataplane.throughput(direct, seconds)))
            )
            toggle(runners, on=False)
            hub.gbits.append(dataplane.throughput(hub, seconds))
            underlay.gbits.append(dataplane.throughput(underlay, seconds))
            print(f"run {number}/{runs} done", file=sys.stderr, flush=True)
        pinged = direct_run(lab, lambda: direct.rtts_ms.extend(dataplane.round_trips(direct)))
        crossed.append(pinged)
        toggle(runners, on=False)
        hub.rtts_ms = dataplane.round_trips(hub)
        underlay.rtts_ms = dataplane.round_trips(underlay)
    return [direct, hub, underlay], crossed


def peer_tables(sizes: list[int]) -> None:
    """Print what each peer table size costs one runner, beside iproute2's floor and the dump."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print("peer table on one runner: krnet's seconds / iproute2's (ratio); one full netlink dump")
    with Lab() as lab:
        node = lab.add_node("r1", "192.0.2.11/24")
        for size in sizes:
            shown = json.loads(node.run([sys.executable, "-c", SCALE, str(size)], env=env).stdout)
            spent, floor = shown["krnet"], shown["floor"]
            base = spent.pop("dump")
            steps = ", ".join(
                f"{step} {value:.3f} / {floor[step]:.3f} s ({value / floor[step]:.1f}x)"
                for step, value in spent.items()
            )
            print(f"  {size} peers: {steps}; dump {base * 1000:.1f} ms")


def report(
    paths: list[dataplane.Measurement], crossed: list[tuple[int, int]], seconds: int
) -> None:
    direct, hub, underlay = paths
    print(f"direct vs hub: {os.cpu_count()} CPUs, one TCP stream, runs of {seconds} s")
    dataplane.print_paths(paths, width=14)
    print(
        f"  direct / hub:      throughput {dataplane.ratio(direct, hub)}, "
        f"RTT {direct.median_rtt_ms / hub.median_rtt_ms:.2f}x"
    )
    print(
        f"  direct / underlay: throughput {dataplane.ratio(direct, underlay)}, "
        f"RTT {direct.median_rtt_ms / underlay.median_rtt_ms:.2f}x"
    )
    shown = ", ".join(f"{sent} / {received}" for sent, received in crossed)
    print(
        f"  each direct run (iperf3 runs, then ping): packets out of vxkrd / into the host's "
        f"vxkr1: {shown}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per path (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="length of a run (default 5)")
    parser.add_argument("--peers", type=int, nargs="+", help="peer table sizes to time instead")
    arguments = parser.parse_args()
    if arguments.peers:
        peer_tables(arguments.peers)
        return 0
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"direct: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # tear down
    try:
        paths, crossed = benchmark(arguments.runs, arguments.seconds)
    except (RuntimeError, subprocess.SubprocessError) as error:
        print(f"direct: {error}", file=sys.stderr)
        return 1
    report(paths, crossed, arguments.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
