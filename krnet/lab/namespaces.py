"""A lab of network namespaces: an underlay switch and nodes on it, never this machine's own.

Each node is a network namespace (`ip netns add <prefix><name>`) joined to a bridge in the
switch namespace by a veth pair created inside the switch namespace, so nothing ever appears
in the machine's own namespace. Each node also has a persistent UTS namespace (bind-mounted
under /run/krnet-lab) with its own hostname, because runners are matched by hostname.
Processes are started with `nsenter` (not `ip netns exec`, which remounts /sys and hides the
cgroups dockerd needs). Teardown kills what runs inside and deletes every namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import string
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from krnet.core.model.plan import IFNAME_MAX

PREFIX = "krt"
NETNS_DIR = Path("/run/netns")
UTS_DIR = Path("/run/krnet-lab")
SWITCH = "sw"
SWITCH_BRIDGE = "br0"
NODE_LINK = "eth0"
INTERNET = "inet"
INTERNET_ADDRESS = "198.51.100.1/24"
INTERNET_UNDERLAY = "192.0.2.254/24"
STOP_GRACE = 10.0  # seconds a tracked process gets between SIGTERM and SIGKILL
POLL = 0.1


class LabError(RuntimeError):
    """The lab could not be built or torn down; the message carries the failing command."""


class LabCommandError(subprocess.CalledProcessError):
    """A command inside a node failed; unlike its base class, str() shows its stderr."""

    def __str__(self) -> str:
        stderr = self.stderr.strip() if isinstance(self.stderr, str) else self.stderr
        return f"{super().__str__()}: {stderr}"


def new_prefix() -> str:
    """A unique name prefix: `krt` + 6 random lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return PREFIX + "".join(secrets.choice(alphabet) for _ in range(6))


def _command(argv: Sequence[str]) -> str:
    """Run a setup command in the machine's mount namespace; its stdout, or a LabError."""
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Node:
    """One namespace of the lab: a host, a runner, the internet, or the switch."""

    name: str
    ns: str
    interface: IPv4Interface | None  # the address others reach it at (None for the switch)
    hostname: str
    lab: Lab = field(repr=False)
    mount_path: str | None = None  # a mount namespace of its own (the lab's firewalld)

    @property
    def ns_path(self) -> str:
        return str(NETNS_DIR / self.ns)

    @property
    def uts_path(self) -> str:
        return str(UTS_DIR / f"{self.ns}.uts")

    @property
    def address(self) -> str:
        """The node's address without prefix length, e.g. "192.0.2.1"."""
        if self.interface is None:
            raise LabError(f"{self.name} has no address")
        return str(self.interface.ip)

    def command(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed to run in this node's network and UTS (and mount) namespaces."""
        mount = [f"--mount={self.mount_path}"] if self.mount_path else []
        return ["nsenter", f"--net={self.ns_path}", f"--uts={self.uts_path}", *mount, "--", *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside the node; output captured as text by default."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        result = subprocess.run(self.command(argv), check=False, **kwargs)
        if check and result.returncode != 0:
            raise LabCommandError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start a long-running process inside the node; the lab stops it on teardown."""
        process = subprocess.Popen(
            self.command(argv),
            env=dict(env) if env is not None else None,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            **kwargs,
        )
        self.lab.track(process)
        return process


class Lab:
    """Namespaces built on demand and always deleted: use as a context manager."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or new_prefix()
        if not self.prefix.startswith(PREFIX):
            raise LabError(
                f"lab prefix {self.prefix!r} must start with {PREFIX!r} (sweep finds it)"
            )
        if len(self.veth_name(99)) > IFNAME_MAX:
            raise LabError(f"lab prefix {self.prefix!r} is too long for interface names")
        self.nodes: dict[str, Node] = {}
        self.switch: Node | None = None
        self.internet: Node | None = None
        self._namespaces: list[Node] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._callbacks: list[Callable[[], object]] = []
        self._gateway: IPv4Interface | None = None  # the internet's underlay address
        self._ports = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()

    def veth_name(self, port: int) -> str:
        """The switch end of a node's veth pair: short enough for IFNAMSIZ."""
        return f"{self.prefix}v{port}"

    def track(self, process: subprocess.Popen[Any]) -> None:
        """Stop this process (and its process group) on teardown."""
        self._processes.append(process)

    def callback(self, func: Callable[[], object]) -> None:
        """Run func first on teardown (last registered, first run), e.g. to remove containers."""
        self._callbacks.append(func)

    def _add_namespace(self, name: str, interface: IPv4Interface | None, hostname: str) -> Node:
        if name in self.nodes or (name == SWITCH and self.switch is not None):
            raise LabError(f"lab {self.prefix} already has a node named {name}")
        node = Node(name, f"{self.prefix}{name}", interface, hostname, self)
        _command(["ip", "netns", "add", node.ns])
        self._namespaces.append(node)
        UTS_DIR.mkdir(mode=0o755, exist_ok=True)
        Path(node.uts_path).touch()
        _command(["unshare", f"--uts={node.uts_path}", "hostname", hostname])
        _command(["ip", "-n", node.ns, "link", "set", "lo", "up"])
        return node

    def add_switch(self) -> Node:
        """The underlay switch: a namespace holding one bridge that every node plugs into."""
        if self.switch is None:
            self.switch = self._add_namespace(SWITCH, None, f"{self.prefix}{SWITCH}")
            _command(["ip", "-n", self.switch.ns, "link", "add", SWITCH_BRIDGE, "type", "bridge"])
            _command(["ip", "-n", self.switch.ns, "link", "set", SWITCH_BRIDGE, "up"])
        return self.switch

    def add_node(
        self, name: str, address: str, mtu: int = 1500, hostname: str | None = None
    ) -> Node:
        """A namespace on the switch with `address` (e.g. "192.0.2.1/24") on its eth0."""
        switch = self.add_switch()
        node = self._add_namespace(name, IPv4Interface(address), hostname or name)
        self._ports += 1
        port = self.veth_name(self._ports)
        sw = ["ip", "-n", switch.ns]
        peer = ["peer", "name", NODE_LINK, "netns", node.ns, "mtu", str(mtu)]
        _command([*sw, "link", "add", port, "mtu", str(mtu), "type", "veth", *peer])
        _command([*sw, "link", "set", port, "master", SWITCH_BRIDGE, "up"])
        _command(["ip", "-n", node.ns, "addr", "add", address, "dev", NODE_LINK])
        _command(["ip", "-n", node.ns, "link", "set", NODE_LINK, "up"])
        self.nodes[name] = node
        if self.internet is not None and name != INTERNET:
            self._route_to_internet(node)
        return node

    def add_internet(
        self, address: str = INTERNET_ADDRESS, underlay: str = INTERNET_UNDERLAY
    ) -> Node:
        """ "The internet": a node on the switch at `underlay`, holding `address`, and every
        node's default route, so a runner's NAT can be seen from outside."""
        if self.internet is not None:
            raise LabError(f"lab {self.prefix} already has an internet")
        node = self.add_node(INTERNET, underlay)
        _command(["ip", "-n", node.ns, "addr", "add", address, "dev", NODE_LINK])
        node.interface = IPv4Interface(address)
        self.internet = node
        self._gateway = IPv4Interface(underlay)
        for other in self.nodes.values():
            if other is not node:
                self._route_to_internet(other)
        return node

    def _route_to_internet(self, node: Node) -> None:
        gateway = self._gateway
        if (
            gateway is not None
            and node.interface is not None
            and gateway.ip in node.interface.network
        ):
            _command(["ip", "-n", node.ns, "route", "replace", "default", "via", str(gateway.ip)])

    def teardown(self) -> None:
        """Run callbacks, stop processes, delete namespaces; always completes, safe to repeat."""
        failures: list[str] = []
        while self._callbacks:
            func = self._callbacks.pop()
            try:
                func()
            except Exception as error:
                failures.append(f"teardown callback {func!r}: {error}")
        stop_processes(self._processes)
        self._processes.clear()
        while self._namespaces:
            node = self._namespaces.pop()
            failures += remove_namespace(node.ns)
        self.nodes.clear()
        self.switch = self.internet = None
        if failures:
            raise LabError("lab teardown incomplete: " + "; ".join(failures))


def stop_processes(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGTERM each process group, give them STOP_GRACE seconds, then SIGKILL what is left."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while any(process.poll() is None for process in running) and time.monotonic() < deadline:
        time.sleep(POLL)
    for process in running:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def namespace_pids(ns: str) -> list[int]:
    """Processes whose network namespace is /run/netns/<ns>."""
    result = subprocess.run(
        ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in result.stdout.split()]


def remove_namespace(ns: str) -> list[str]:
    """Kill what runs in a namespace, delete it and its UTS file; returns what failed."""
    failures: list[str] = []
    pids = namespace_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_GRACE
    while namespace_pids(ns) and time.monotonic() < deadline:
        time.sleep(POLL)
    if (NETNS_DIR / ns).exists():
        result = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"ip netns del {ns}: {result.stderr.strip()}")
    failures += _remove_uts(UTS_DIR / f"{ns}.uts")
    return failures


def _remove_uts(path: Path) -> list[str]:
    if not path.exists():
        return []
    subprocess.run(["umount", str(path)], capture_output=True, check=False)
    try:
        path.unlink()
    except OSError as error:
        return [f"remove {path}: {error.strerror}"]
    return []


def sweep(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces (and UTS files) left by earlier labs whose names start with prefix."""
    if not prefix.startswith(PREFIX):
        raise LabError(f"sweep prefix {prefix!r} must start with {PREFIX!r}")
    swept: list[str] = []
    failures: list[str] = []
    names = sorted(path.name for path in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.exists() else []
    for ns in names:
        failures += remove_namespace(ns)
        swept.append(ns)
    for path in sorted(UTS_DIR.glob(f"{prefix}*.uts")) if UTS_DIR.exists() else []:
        failures += _remove_uts(path)
    if failures:
        raise LabError("sweep incomplete: " + "; ".join(failures))
    return swept
