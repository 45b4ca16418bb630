"""`krnet demo`: a whole cluster in network namespaces on this machine, proven with real packets.

Builds an underlay switch, a host, two runners (a dockerd and a busybox container each), runs the
real `krnet serve` everywhere, proves cross-runner, container-to-host, MTU and NAT traffic step by
step, then opens the TUI on the demo host (or prints a report) and tears it all down on exit.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from krnet.errors import KrnetError, UsageError

if TYPE_CHECKING:
    from krnet.lab.cluster import Cluster

REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "iptables", "ipset", "ping")
DOCKER_TOOLS = ("dockerd", "docker", "busybox")


class DemoFailed(KrnetError):
    """A step of the demo did not do what it should."""


def _say(message: str) -> None:
    print(f"  - {message}", flush=True)


def _step(title: str, action: Callable[[], str]) -> None:
    """Run one proof, print its outcome; stops the demo when it fails."""
    if sys.stdout.isatty():
        print(f"[....] {title}", end="\r", flush=True)
    started = time.monotonic()
    try:
        detail = action()
    except Exception as exc:
        print(f"[FAIL] {title}")
        raise DemoFailed(f"demo step failed: {title}: {exc}") from exc
    print(f"[ OK ] {title} ({time.monotonic() - started:.1f}s){': ' + detail if detail else ''}")


def _preflight(with_docker: bool) -> None:
    from krnet.lab.prerequisites import missing_prerequisites

    reason = missing_prerequisites(REQUIRED_TOOLS + (DOCKER_TOOLS if with_docker else ()))
    if reason is not None:
        raise UsageError(
            f"krnet demo {reason}: run it as root (sudo), with apt-get install iproute2 "
            "iptables iputils-ping util-linux docker.io busybox-static (or with --no-docker)"
        )


def run(args: argparse.Namespace) -> int:
    from krnet.lab.cluster import Cluster
    from krnet.lab.namespaces import sweep

    if args.down:
        removed = sweep()
        print(f"removed {len(removed)} lab namespaces" if removed else "no lab namespaces left")
        return 0
    with_docker = not args.no_docker and shutil.which("dockerd") is not None
    _preflight(with_docker)
    workdir = Path(tempfile.mkdtemp(prefix="krnet-demo-"))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    print(f"krnet demo: building a cluster of 1 host and 2 runners in namespaces ({workdir})")
    cluster = Cluster(workdir, runners=2, with_docker=with_docker, progress=_say)
    try:
        cluster.build()
        _prove(cluster, with_docker)
        _show(cluster, headless=args.headless or not sys.stdout.isatty())
        if args.keep:
            print(f"lab left running (prefix {cluster.lab.prefix}); remove it: krnet demo --down")
            return 0
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down")
        return 130
    finally:
        if not args.keep:
            print("tearing down the lab ...", flush=True)
            cluster.close()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _prove(cluster: Cluster, with_docker: bool) -> None:
    from krnet.lab import proofs

    cluster.start_all()
    _step("host welcomes both runners", lambda: proofs.runners_joined(cluster))
    _step("host tunnels vxkr1, vxkr2 with VNIs 101, 102", lambda: proofs.host_tunnels(cluster))
    if not with_docker:
        _step("runner 1 reaches the host at 10.0.0.1", lambda: proofs.runner_reaches_host(cluster))
        return
    _step("containers on both runners", lambda: proofs.start_containers(cluster))
    _step("container on runner 1 -> container on runner 2", lambda: proofs.cross_runner(cluster))
    _step("container on runner 1 -> host at 10.0.0.1", lambda: proofs.container_to_host(cluster))
    _step("full-MTU packet with DF set across runners", lambda: proofs.full_mtu(cluster))
    _step("container -> internet through its runner's NAT", lambda: proofs.nat(cluster))


def _show(cluster: Cluster, *, headless: bool) -> None:
    if headless:
        print()
        print(cluster.krnet(cluster.host, "node", "overlay"))
        print(cluster.krnet(cluster.host, "doctor", check=False))
        return
    print("opening the TUI on the demo host (q quits and tears the lab down)")
    time.sleep(1)
    cluster.host.node.run(
        [
            *cluster.command,
            "--config",
            str(cluster.host.config),
            "--data-dir",
            str(cluster.host.data_dir),
            "tui",
        ],
        capture_output=False,
        check=False,
    )
