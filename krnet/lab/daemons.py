"""The daemons a lab cluster runs beside krnet: a dockerd per runner, firewalld on request."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from krnet.lab.dockerd import DockerDaemon
    from krnet.lab.firewalld import LabFirewalld
    from krnet.lab.processes import ClusterNode

IMAGE = "krnet-busybox:latest"


class NodeDaemons:
    """Starting and stopping the nodes' dockerd and firewalld (a part of `lab.Cluster`)."""

    nodes: list[ClusterNode]
    settings: dict[str, object]
    progress: Callable[[str], None]
    _daemons: list[DockerDaemon]
    firewalls: dict[str, LabFirewalld]

    def _start_firewalld(self, node: ClusterNode) -> None:
        """firewalld on `node`; on the host the join port opened, as docs/firewall.md asks of
        the operator (krnet opens only the VXLAN port, and only to members)."""
        from krnet.core.model.settings import Settings
        from krnet.lab.firewalld import start_firewalld

        self.progress(f"starting firewalld in {node.node.ns}")
        daemon = start_firewalld(node.node, node.workdir / "firewalld")
        if node.mode == "host":
            port = self.settings.get("join_port", Settings().join_port)
            for where in (("--permanent",), ()):  # what `--permanent` and `--reload` amount to
                daemon.cmd(*where, f"--add-port={port}/tcp")
        self.firewalls[node.name] = daemon

    def _start_dockerds(self) -> None:
        from krnet.lab.dockerd import ensure_busybox_image

        for runner in self.nodes:
            self.progress(f"starting dockerd in {runner.node.ns}")
            daemon = self.start_dockerd(runner)
            self.progress(f"importing {IMAGE} (busybox) into {runner.name}'s dockerd")
            ensure_busybox_image(daemon.docker_host, IMAGE)

    def start_dockerd(self, runner: ClusterNode) -> DockerDaemon:
        """A dockerd in `runner`'s namespace, listening where its krnet expects it."""
        from krnet.lab.dockerd import start_dockerd

        daemon = start_dockerd(runner.node.ns, runner.docker_dir, runner.node.ns)
        assert daemon.docker_host == runner.docker_host
        self._daemons.append(daemon)
        return daemon

    def stop_dockerd(self, runner: ClusterNode) -> None:
        """Stop `runner`'s dockerd; its containers and state go with it (start_dockerd anew)."""
        for daemon in [d for d in self._daemons if d.netns == runner.node.ns]:
            daemon.stop()
            self._daemons.remove(daemon)
