"""A whole krnet cluster in network namespaces: one host, N runners, a dockerd per runner.

The same code builds `krnet demo` and the integration tests, so what the demo shows is what the
tests prove. Every node runs the real `krnet serve` (from the zipapp or the source tree) inside
its own network and UTS namespace; nothing touches this machine's own namespace.

Underlay: a switch namespace with a bridge; the host at 192.0.2.1, runner i at 192.0.2.(10+i),
and an "internet" node at 192.0.2.254 that also owns 198.51.100.1 and is every node's default
gateway, so container traffic to 198.51.100.1 leaves through the runner's NAT.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from krnet.lab.daemons import IMAGE, NodeDaemons
from krnet.lab.namespaces import Lab, Node
from krnet.lab.processes import ClusterNode, KrnetProcesses, krnet_command

if TYPE_CHECKING:
    from krnet.lab.dockerd import DockerDaemon
    from krnet.lab.firewalld import LabFirewalld

HOST_UNDERLAY = "192.0.2.1"
INTERNET_ADDRESS = "198.51.100.1"
UNDERLAY_PREFIX = 24

Progress = Callable[[str], None]


def runner_underlay(index: int) -> str:
    """Runner `index` (1-based) on the underlay."""
    return f"192.0.2.{10 + index}"


@dataclass
class Cluster(KrnetProcesses, NodeDaemons):
    """Build, run and inspect a lab cluster; `close` tears everything down."""

    workdir: Path
    runners: int = 2
    with_docker: bool = True
    with_firewalld: bool = False  # a real firewalld on the host and every runner
    command: Sequence[str] = field(default_factory=krnet_command)
    settings: dict[str, object] = field(default_factory=dict)
    progress: Progress = lambda message: None
    lab: Lab = field(init=False)
    host: ClusterNode = field(init=False)
    internet: Node = field(init=False)
    nodes: list[ClusterNode] = field(init=False, default_factory=list)
    token: str = field(init=False, default_factory=lambda: secrets.token_hex(32))
    containers: dict[str, str] = field(init=False, default_factory=dict)  # name -> address
    _daemons: list[DockerDaemon] = field(init=False, default_factory=list)
    firewalls: dict[str, LabFirewalld] = field(init=False, default_factory=dict)  # by node name

    # -- building -----------------------------------------------------------------------------

    def build(self) -> Cluster:
        """Namespaces, underlay, configs and dockerds; nothing of krnet runs yet."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lab = Lab()
        self.progress(f"creating network namespaces ({self.lab.prefix}*)")
        self.lab.add_switch()
        self.host = self._add_node("host", HOST_UNDERLAY, "host")
        for index in range(1, self.runners + 1):
            self.nodes.append(self._add_node(f"r{index}", runner_underlay(index), "runner"))
        self.internet = self.lab.add_internet(f"{INTERNET_ADDRESS}/24")
        if self.with_docker:
            self._start_dockerds()
        return self

    def _add_node(self, name: str, address: str, mode: str) -> ClusterNode:
        node = self.lab.add_node(name, f"{address}/{UNDERLAY_PREFIX}", hostname=f"krnet-{name}")
        cluster_node = ClusterNode(name, node, self.workdir / name, mode)
        cluster_node.workdir.mkdir(parents=True, exist_ok=True)
        if self.with_firewalld:
            self._start_firewalld(cluster_node)
        if mode == "runner":
            # Always this node's own socket (where start_dockerd puts it), never the machine's.
            cluster_node.docker_host = f"unix://{cluster_node.docker_dir / 'docker.sock'}"
        self.write_config(cluster_node)
        return cluster_node

    def write_config(self, node: ClusterNode, **overrides: object) -> None:
        """The node's krnet.toml: the lab's addresses, the shared token, then `overrides`."""
        values: dict[str, object] = {
            "mode": node.mode,
            "overlay_enabled": True,
            "join_token": self.token,
            "heartbeat_interval": 1.0,
            "runner_timeout": 5.0,
            "reconcile_interval": 5.0,
            "probe_interval": 1.0,
        }
        if node.mode == "host":
            values["host_reachable_address"] = HOST_UNDERLAY
        else:
            values["host_address"] = HOST_UNDERLAY
            values["runner_address"] = node.node.address
        values |= self.settings | overrides
        node.config.write_text(
            "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())
        )

    # -- running krnet ------------------------------------------------------------------------

    def start_all(self, timeout: float = 60.0) -> None:
        """Host first, then runners one by one, so runner i gets id i (ids go in join order)."""
        self.progress("starting krnet serve on the host")
        self.start(self.host)
        for count, runner in enumerate(self.nodes, start=1):
            self.progress(f"starting krnet serve on {runner.name}")
            self.start(runner)
            self.wait_until(f"{runner.name} to join", partial(self._holds, "total", count), timeout)

    def _holds(self, key: str, value: object, node: ClusterNode | None = None) -> bool:
        """Whether `node`'s overlay status has `value` under `key` now."""
        return bool(self.status(node).get(key) == value)

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll `predicate` until it holds; a clear error (with serve logs) when it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (AssertionError, KeyError, RuntimeError, ValueError, subprocess.SubprocessError):
                pass
            time.sleep(0.25)
        logs = "\n".join(f"--- {n.name}\n{_tail(n.log)}" for n in [self.host, *self.nodes])
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")

    def wait_for_runners(self, count: int | None = None, timeout: float = 60.0) -> None:
        """Until the host lists `count` active runners, each runner has applied its allocation
        (its own record is written after its tunnel is built), and has its Docker network."""
        want = self.runners if count is None else count
        self.wait_until(f"{want} active runners", partial(self._holds, "active", want), timeout)
        for runner in self.nodes[:want]:
            applied = partial(self._holds, "total", 1, runner)
            self.wait_until(f"{runner.name} to apply its allocation", applied, timeout)
            if self.with_docker:
                self.wait_until(
                    f"{runner.name}'s overlay Docker network",
                    partial(self._has_overlay_network, runner),
                    timeout,
                )

    # -- containers -----------------------------------------------------------------------------

    def docker(self, node: ClusterNode, *args: str, check: bool = True) -> str:
        """Run the docker CLI against `node`'s dockerd."""
        if node.docker_host is None:
            raise RuntimeError(f"{node.name} has no dockerd")
        result = subprocess.run(
            ["docker", "-H", node.docker_host, *args], capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} on {node.name}: {result.stderr.strip()}")
        return result.stdout

    def _has_overlay_network(self, node: ClusterNode) -> bool:
        return "kohakuriver-overlay" in self.docker(node, "network", "ls")

    def run_container(
        self, node: ClusterNode, name: str, network: str = "kohakuriver-overlay"
    ) -> str:
        """Start a busybox container on `node`; returns its address on `network`."""
        self.docker(
            node, "run", "-d", "--name", name, "--network", network, IMAGE, "sleep", "86400"
        )
        template = f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}'
        self.containers[name] = self.docker(node, "inspect", "-f", template, name).strip()
        return self.containers[name]

    def container(
        self, node: ClusterNode, name: str, *argv: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside container `name` on `node` (no check: callers read the result)."""
        assert node.docker_host is not None
        return subprocess.run(
            ["docker", "-H", node.docker_host, "exec", name, *argv],
            capture_output=True,
            text=True,
            check=False,
        )

    # -- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process and remove every namespace, whatever state we are in."""
        for node in [getattr(self, "host", None), *self.nodes]:
            if node is not None and node.serve is not None:
                try:
                    self.stop(node, timeout=5)
                except subprocess.TimeoutExpired:
                    self.stop(node, kill=True)
        for daemon in self._daemons:
            daemon.stop()
        for node in self.nodes:
            shutil.rmtree(node.docker_dir, ignore_errors=True)
        if hasattr(self, "lab"):
            self.lab.teardown()

    def __enter__(self) -> Cluster:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
