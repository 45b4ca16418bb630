"""The krnet processes of a lab cluster: each node's `krnet serve`, and krnet commands run on a
node, all in the node's namespaces with the node's config and data dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from krnet.lab.namespaces import Node


def krnet_command() -> list[str]:
    """How to run this very krnet in a child process: the zipapp if we are one, else -m krnet."""
    if sys.argv and sys.argv[0].endswith(".pyz"):
        return [sys.executable, os.path.abspath(sys.argv[0])]
    return [sys.executable, "-m", "krnet"]


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for krnet children: the source tree importable when we run from it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KRNET_")}
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env | (extra or {})


@dataclass
class ClusterNode:
    """One krnet node: its namespace, files and (when running) its `krnet serve`."""

    name: str
    node: Node
    workdir: Path
    mode: str
    docker_host: str | None = None
    serve: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.workdir / "krnet.toml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "serve.log"

    @property
    def docker_dir(self) -> Path:
        """dockerd's state: short and unique (unix socket paths are limited to 107 bytes)."""
        return Path(tempfile.gettempdir()) / f"{self.node.ns}.docker"


class KrnetProcesses:
    """Starting, stopping and running krnet on a cluster's nodes (a part of `lab.Cluster`)."""

    command: Sequence[str]
    host: ClusterNode

    def start(self, node: ClusterNode) -> None:
        """Start `krnet serve` on `node` (logs appended to its serve.log)."""
        extra = {"DOCKER_HOST": node.docker_host} if node.docker_host else {}
        log = node.log.open("ab")
        node.serve = node.node.popen(
            [
                *self.command,
                "--config",
                str(node.config),
                "--data-dir",
                str(node.data_dir),
                "serve",
            ],
            env=_child_env(extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, node: ClusterNode, *, kill: bool = False, timeout: float = 10.0) -> int | None:
        """Stop `krnet serve` on `node` (SIGTERM, or SIGKILL with kill=True); its exit code."""
        process, node.serve = node.serve, None
        if process is None:
            return None
        if kill:
            process.kill()
        else:
            process.terminate()
        return process.wait(timeout=timeout)

    def krnet(self, node: ClusterNode, *args: str, check: bool = True) -> str:
        """Run a krnet command on `node` and return its stdout."""
        result = self.run_krnet(node, *args)
        if check and result.returncode != 0:
            raise RuntimeError(f"krnet {' '.join(args)} on {node.name} failed: {result.stderr}")
        return result.stdout

    def run_krnet(self, node: ClusterNode, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a krnet command on `node`: its exit code, stdout and stderr."""
        extra = {"DOCKER_HOST": node.docker_host} if node.docker_host else {}
        argv = [*self.command, "--config", str(node.config), "--data-dir", str(node.data_dir)]
        return node.node.run([*argv, *args], env=_child_env(extra), check=False)

    def status(self, node: ClusterNode | None = None) -> dict[str, Any]:
        """`krnet node overlay --json` on `node` (the host by default), parsed."""
        status: dict[str, Any] = json.loads(
            self.krnet(node or self.host, "node", "overlay", "--json")
        )
        return status
