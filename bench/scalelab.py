"""A krnet host in a lab namespace and a namespace of simulated runners: the ground that
bench/scale.py measures on and tests/lab/test_scale.py asserts on.

The host runs the real `krnet serve` (overlay enabled: real vxkrN tunnels, routes, iptables
and the VXLAN port guard) at 192.0.2.1, built by krnet.lab.cluster.Cluster with no runner
nodes and no Docker, with the product's default timers. The runners are bench/simrunner.py in
a second namespace at 192.0.2.2: all connect from there, and runner i claims its own
`physical_ip` (198.51.100.i, then 203.0.113.*), so the host builds one tunnel and one guard
entry per runner (and notes each claim that differs from the connection's address, as for a
runner behind NAT). Kernel writes are counted with `ip monitor` (links, addresses, routes)
and `nft monitor` (iptables-nft's ruleset), between two marker events in the host namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from krnet.core.dataplane.guardset import GUARD_SET, parse_members  # noqa: E402
from krnet.core.model.plan import runner_id_from_tunnel, tunnel_name  # noqa: E402
from krnet.core.model.settings import Settings  # noqa: E402
from krnet.core.record.reader import database_path  # noqa: E402
from krnet.lab.cluster import HOST_UNDERLAY, Cluster, ClusterNode, krnet_command  # noqa: E402
from krnet.lab.namespaces import Node, stop_processes  # noqa: E402

SIM_UNDERLAY = "192.0.2.2"
# documentation and benchmarking ranges (RFC 5737, RFC 2544): 254 claims each, 1,524 in all
CLAIMED_BLOCKS = ("198.51.100", "203.0.113", "198.18.0", "198.18.1", "198.18.2", "198.18.3")
MAX_SIMULATED = 254 * len(CLAIMED_BLOCKS)
READY = "listening for runners on"
SIMRUNNER = Path(__file__).with_name("simrunner.py")
HOSTPROFILE = Path(__file__).with_name("hostprofile.py")
WAIT = 120.0  # seconds for the host to listen, or a monitor to see its marker
POLL = 0.02
MARK_INTERVAL = 0.2
TIMERS = ("heartbeat_interval", "runner_timeout", "reconcile_interval")
NETLINK_MONITOR = ("ip", "-o", "monitor", "link", "address", "route")
NFT_MONITOR = ("nft", "monitor")
IPV6_AUTOCONF = ("fe80:", "ff00::/8")


def claimed_address(index: int) -> str:
    """The underlay address simulated runner `index` (1-based) claims in its join."""
    block, offset = divmod(index - 1, 254)
    return f"{CLAIMED_BLOCKS[block]}.{offset + 1}"


@dataclass(frozen=True)
class Joined:
    """What the simulated runners saw: the round's wall time, each latency, who got which id."""

    wall: float
    latencies: list[float]
    claims: dict[int, str]  # runner id -> the address that runner claimed
    errors: list[str]


@dataclass(frozen=True)
class Writes:
    """What was written to the host's kernel while it was watched."""

    netlink: list[str]  # rtnetlink notifications: links, addresses, routes
    nft: list[str]  # ruleset changes (iptables-nft's writes), as `nft monitor` prints them


@dataclass(frozen=True)
class Restart(Writes):
    """One restart of the host: its writes, the time until it listened, what it recorded."""

    seconds: float
    recorded: list[str]  # changes the host itself logged and recorded as reconcile events


class Fleet:
    """bench/simrunner.py in the runners' namespace, driven one line at a time."""

    def __init__(self, node: Node, token: str, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.process = node.popen(
            [sys.executable, str(SIMRUNNER), "--host", HOST_UNDERLAY, *addresses],
            env=child_env() | {"BENCH_TOKEN": token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # ready: its imports are done and do not count

    def join(self) -> Joined:
        """All runners join at once; returns when every one has its answer."""
        result = self._say("go")
        claims = {int(runner_id): address for runner_id, address in result["ids"]}  # type: ignore[attr-defined]
        return Joined(result["wall"], result["latencies"], claims, result["errors"])  # type: ignore[arg-type]

    def heartbeats(self) -> int:
        """Heartbeats the host has answered so far, all runners together."""
        return int(self._say("count")["heartbeats"])  # type: ignore[call-overload]

    def seen(self, runner_id: int) -> tuple[list[float | None], list[float | None]]:
        """For every simulated runner, the monotonic time its peer table last gained runner
        `runner_id` and the time it last lost it (None: never), in direct mode."""
        result = self._say(f"seen {runner_id}")
        return result["appeared"], result["gone"]  # type: ignore[return-value]

    def stop(self) -> list[str]:
        """Close every connection; the errors of runners that lost theirs while heartbeating."""
        result = self._say("stop")
        self.process.wait(timeout=WAIT)
        return [str(error) for error in result["heartbeat_errors"]]  # type: ignore[attr-defined]

    def _say(self, line: str) -> dict[str, object]:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"simulated runners exited with {self.process.wait()}")
        result: dict[str, object] = json.loads(line)
        return result


class Monitor:
    """A monitor command in a namespace; `events` returns what it printed between two marks."""

    def __init__(self, node: Node, argv: Sequence[str], path: Path) -> None:
        self.node = node
        self.argv = list(argv)
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Monitor:
        with self.path.open("wb") as out:
            self.process = self.node.popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        self._mark("krtmarka")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            stop_processes([self.process])

    def events(self) -> list[str]:
        """What the monitor saw since entering, up to now."""
        self._mark("krtmarkb")
        lines = self.path.read_text(errors="replace").splitlines()
        start = max(i for i, line in enumerate(lines) if "krtmarka" in line) + 1
        end = min(i for i, line in enumerate(lines) if "krtmarkb" in line)
        # nft's own transaction comments belong to the marks; IPv6 link-local addresses and
        # their routes are the kernel's autoconfiguration finishing late (DAD) on tunnels made
        # just before: krnet writes no IPv6 at all
        return [
            line
            for line in lines[start:end]
            if not line.endswith("(nft)") and not any(mark in line for mark in IPV6_AUTOCONF)
        ]

    def _mark(self, name: str) -> None:
        """Add and delete a marker object until the monitor prints its deletion (a monitor
        just started may not be listening yet)."""
        if self.argv[0] == "nft":
            table = ["table", "ip", name]
            commands = [["nft", "add", *table], ["nft", "delete", *table]]
        else:
            commands = [["ip", "link", "add", name, "type", "bridge"], ["ip", "link", "del", name]]
        deadline = time.monotonic() + WAIT
        while not self._printed_deletion(name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[0]} monitor never reported {name}")
            for command in commands:
                self.node.run(command)
            time.sleep(MARK_INTERVAL)

    def _printed_deletion(self, name: str) -> bool:
        lines = self.path.read_text(errors="replace").splitlines()
        return any(name in line and line.lower().startswith("delete") for line in lines)


class ScaleLab:
    """A lab cluster with a host and no runner nodes, plus the simulated runners' namespace."""

    def __init__(
        self,
        workdir: Path,
        progress: Callable[[str], None] = lambda _: None,
        settings: Mapping[str, object] | None = None,
        profile: Path | None = None,
    ) -> None:
        """`settings` go to the host's krnet.toml beside the product's default timers (e.g.
        overlay_runner_prefix = 20 for more than 255 runners); `profile`: run every krnet
        process under bench/hostprofile.py, writing PROFILE.PID."""
        defaults = Settings()
        chosen: dict[str, object] = {name: getattr(defaults, name) for name in TIMERS}
        chosen |= dict(settings or {})
        self.plan = Settings(**chosen).plan()  # type: ignore[arg-type]
        self.workdir = workdir
        command = krnet_command()
        if profile is not None:
            command = [sys.executable, str(HOSTPROFILE), str(profile), "--"]
        self.cluster = Cluster(
            workdir,
            runners=0,
            with_docker=False,
            command=command,
            settings=chosen,
            progress=progress,
        )

    def __enter__(self) -> ScaleLab:
        self.cluster.__enter__()
        try:
            self.sim = self.cluster.lab.add_node("sim", f"{SIM_UNDERLAY}/24", hostname="krnet-sim")
        except BaseException:
            self.cluster.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.close()

    @property
    def host(self) -> ClusterNode:
        return self.cluster.host

    @property
    def pid(self) -> int:
        """The serve process (nsenter execs it, so it is the Popen's own pid)."""
        assert self.host.serve is not None
        return self.host.serve.pid

    def start_host(self) -> float:
        """Start `krnet serve` on the host; seconds until it listens (its first reconcile is
        done by then: the service reconciles before it opens the join port)."""
        offset = self.host.log.stat().st_size if self.host.log.exists() else 0
        started = time.perf_counter()
        self.cluster.start(self.host)
        _wait(
            "the host to listen",
            lambda: READY in _read_from(self.host.log, offset),
            self.host.serve,
        )
        return time.perf_counter() - started

    def fleet(self, count: int) -> Fleet:
        """`count` simulated runners, ready to join on `Fleet.join`."""
        if not 1 <= count <= min(MAX_SIMULATED, self.plan.max_runners):
            raise ValueError(f"simulated runners: 1..{self.plan.max_runners}, not {count}")
        addresses = [claimed_address(index) for index in range(1, count + 1)]
        return Fleet(self.sim, self.cluster.token, addresses)

    def overlay_json(self) -> str:
        """`krnet node overlay --json` in the host's namespace (it reads the record)."""
        return self.cluster.krnet(self.host, "node", "overlay", "--json")

    def overlay_json_remote(self) -> str:
        """`krnet node overlay --connect HOST --json` from the runners' namespace: the
        authenticated `status` over the join protocol, as a remote TUI asks for it."""
        argv = [*self.cluster.command, "--config", str(self.host.config), "--data-dir"]
        argv += [str(self.workdir / "remote"), "node", "overlay", "--json"]
        return self.sim.run([*argv, "--connect", HOST_UNDERLAY], env=child_env()).stdout

    @contextlib.contextmanager
    def watch(self) -> Iterator[Callable[[], Writes]]:
        """Watch the host's kernel; call the function it yields (once) for the writes so far."""
        node = self.host.node
        with (
            Monitor(node, NETLINK_MONITOR, self.workdir / "ip-monitor.log") as links,
            Monitor(node, NFT_MONITOR, self.workdir / "nft-monitor.log") as rules,
        ):
            # nft's comment lines (transaction numbers) are not changes
            yield lambda: Writes(
                links.events(), [line for line in rules.events() if not line.startswith("#")]
            )

    def restart(self, damage: str | None = None) -> Restart:
        """SIGTERM the host, delete link `damage` (if any) by hand, start it, count its writes."""
        self.cluster.stop(self.host)
        if damage is not None:
            self.host.node.run(["ip", "link", "del", damage])
        last_event = self._last_event_id()
        with self.watch() as writes:
            seconds = self.start_host()
            written = writes()
        return Restart(
            written.netlink, written.nft, seconds, self._recorded_changes(after=last_event)
        )

    def kernel_problems(self, claims: Mapping[int, str]) -> list[str]:
        """How the host's kernel differs from one tunnel (VNI, remote), route and guard entry
        for each runner id, given the address each runner claimed."""
        node = self.host.node
        links = json.loads(node.run(["ip", "-j", "-d", "link", "show", "type", "vxlan"]).stdout)
        tunnels = {link["ifname"]: link["linkinfo"]["info_data"] for link in links}
        routes = json.loads(node.run(["ip", "-j", "route"]).stdout)
        routed = {(route["dst"], route.get("dev")) for route in routes}
        problems = []
        extra = sorted(set(filter(runner_id_from_tunnel, tunnels)) - set(map(tunnel_name, claims)))
        if extra:
            problems.append(f"tunnels no runner holds: {', '.join(extra)}")
        for runner in map(self.plan.runner, sorted(claims)):
            data = tunnels.get(runner.host_interface)
            want = {"id": runner.vni, "remote": claims[runner.runner_id]}
            if data is None or {key: data.get(key) for key in want} != want:
                problems.append(f"{runner.host_interface} is {data}, wanted {want}")
            if (str(runner.subnet), runner.host_interface) not in routed:
                problems.append(f"no route {runner.subnet} dev {runner.host_interface}")
        guard = parse_members(node.run(["ipset", "save", GUARD_SET]).stdout)
        if sorted(guard) != sorted(claims.values()):
            problems.append(f"{GUARD_SET} holds {len(guard)} peers, not the {len(claims)}")
        return problems

    def _last_event_id(self) -> int:
        with contextlib.closing(sqlite3.connect(database_path(self.host.data_dir))) as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM event").fetchone()[0])

    def _recorded_changes(self, after: int) -> list[str]:
        with contextlib.closing(sqlite3.connect(database_path(self.host.data_dir))) as db:
            rows = db.execute(
                "SELECT message FROM event WHERE kind = 'reconcile' AND id > ? ORDER BY id",
                (after,),
            ).fetchall()
        return [message for (message,) in rows]


def child_env() -> dict[str, str]:
    """This environment without KRNET_* settings, with this source tree importable."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KRNET_")}
    return environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read().decode(errors="replace")


def _wait(
    what: str, predicate: Callable[[], bool], process: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"waiting for {what}: its process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}: nothing after {WAIT:.0f} s")
        time.sleep(POLL)
