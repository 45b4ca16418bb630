"""A real firewalld inside a lab node, never this machine's own.

firewalld needs the system D-Bus and keeps its configuration in /etc/firewalld, so each node
gets a mount namespace of its own (`unshare --mount`, slave propagation: the machine's mounts
still reach it, none of its own leak out) with a tmpfs on /run/dbus for a private
`dbus-daemon --system`, and /etc/firewalld bind-mounted from a copy in the node's work
directory. `firewalld --nofork --nopid` then filters the node's network namespace with its
nftables backend. The node runs every later command (krnet serve, firewall-cmd, ip) in that
mount namespace, so krnet finds this firewalld exactly as it would find the system's one.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from krnet.lab.namespaces import NODE_LINK, LabError, Node

SYSTEM_CONFIG = Path("/etc/firewalld")
TOOLS = ("firewalld", "firewall-cmd", "dbus-daemon", "dbus-send")
START_TIMEOUT = 60.0  # firewalld (Python) takes a few seconds per node on a busy machine


@dataclass
class LabFirewalld:
    """One node's firewalld: its process (which holds the mount namespace) and its files."""

    node: Node
    workdir: Path
    process: subprocess.Popen[bytes]

    def cmd(self, *args: str, check: bool = True) -> str:
        """`firewall-cmd ARGS` against this firewalld; its stdout."""
        return self.node.run(["firewall-cmd", *args], check=check).stdout


def start_firewalld(node: Node, workdir: Path, timeout: float = START_TIMEOUT) -> LabFirewalld:
    """Start D-Bus and firewalld in a new mount namespace of `node`; eth0 in the default zone
    (runtime and permanent, as NetworkManager's connection zone would be).

    From here on `node` runs its commands in that mount namespace; the lab's teardown stops
    firewalld (its process group) and the D-Bus daemon (everything in the network namespace).
    """
    if node.mount_path is not None:
        raise LabError(f"{node.name} already has a mount namespace of its own")
    workdir.mkdir(parents=True, exist_ok=True)
    config_dir = workdir / "etc-firewalld"  # what the node sees as /etc/firewalld
    shutil.copytree(SYSTEM_CONFIG, config_dir, symlinks=True)
    Path("/run/dbus").mkdir(mode=0o755, exist_ok=True)
    log = shlex.quote(str(workdir / "firewalld.log"))
    script = " && ".join(
        [
            "mount -t tmpfs -o mode=0755 krnet-lab-dbus /run/dbus",
            f"mount --bind {shlex.quote(str(config_dir))} {SYSTEM_CONFIG}",
            "dbus-daemon --system --fork",
            f"exec firewalld --nofork --nopid --log-target file --log-file {log}",
        ]
    )
    with (workdir / "firewalld.out").open("ab") as out:
        process = node.popen(
            ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    daemon = LabFirewalld(node, workdir, process)
    # nsenter and unshare exec what they run: this pid is firewalld, in the new namespace.
    node.mount_path = f"/proc/{process.pid}/ns/mnt"
    _wait_running(daemon, timeout)
    zone = daemon.cmd("--get-default-zone").strip()
    for where in (("--permanent",), ()):  # permanent too, so a `--reload` keeps it
        daemon.cmd(*where, f"--zone={zone}", f"--change-interface={NODE_LINK}")
    return daemon


def _wait_running(daemon: LabFirewalld, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            break
        if daemon.node.run(["firewall-cmd", "--state"], check=False).returncode == 0:
            return
        time.sleep(0.5)
    said = (daemon.workdir / "firewalld.out").read_text(errors="replace")[-500:].strip()
    log = daemon.workdir / "firewalld.log"
    raise LabError(
        f"firewalld did not start in {daemon.node.ns} within {timeout:.0f}s "
        f"(exit {daemon.process.poll()}): {said or f'see {log}'}"
    )
