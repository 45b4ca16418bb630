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


def report(
    paths: list[dataplane.Measurement], crossed: list[tuple[int, int]], seconds: int
) -> None:
    direct, hub, underlay = paths
    print(f"direct vs hub: {os.cpu_count()} CPUs, one TCP stream, runs of {seconds} s")
    for path in paths:
        runs_text = ", ".join(f"{value:.2f}" for value in path.gbits)
        print(
            f"  {path.label:14} {path.median_gbits:6.2f} Gbit/s  ({runs_text})   "
            f"RTT {path.median_rtt_ms:.3f} ms"
        )
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
    arguments = parser.parse_args()
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
