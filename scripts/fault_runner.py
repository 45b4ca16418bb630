"""Faults under running runners, on a lab cluster of real runners with a dockerd each: a runner
killed during its own set-up, Docker stopped and started under a runner, a runner's underlay
link taken down and up, and links and rules changed by hand on the host and the runners.

Each fault returns what it saw; `problems()` are the promises that did not hold (empty when all
did), `line()` says what happened. A wait that never ends raises (TimeoutError, ProofFailed).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from krnet.lab.cluster import IMAGE, Cluster, ClusterNode, runner_underlay  # noqa: E402
from krnet.lab.proofs import HOST_OVERLAY_IP, OVERLAY_NETWORK, ProofFailed, link_details  # noqa: E402

KILL_WINDOW = 0.5  # seconds after its welcome in which a runner with its links is killed
SETUP_LINKS = {"kohaku-overlay", "vxlan0"}
GATEWAY = "192.0.2.254"  # the lab's internet: every node's default route
OVERLAY_ROUTE = "10.0.0.0/8"
POLL = 0.02
COMPLETE = "bridge+vxlan0+route+nat+network"  # what `setup_state` finds after a whole set-up

# -- looking at a node ----------------------------------------------------------------------------


def own_id(cluster: Cluster, runner: ClusterNode) -> int | None:
    """The id in the runner's own record (written once its set-up is applied)."""
    runners = cluster.status(runner)["runners"]
    return runners[0]["runner_id"] if runners else None  # type: ignore[index]


def host_entry(cluster: Cluster, runner: ClusterNode) -> dict[str, object]:
    """The host's `node overlay` entry for `runner` (matched by its hostname)."""
    for entry in cluster.status()["runners"]:  # type: ignore[union-attr]
        if entry["hostname"] == runner.node.hostname:
            return entry  # type: ignore[no-any-return]
    raise ProofFailed(f"the host has no record of {runner.node.hostname}")


def reaches(node: ClusterNode, target: str) -> bool:
    """A ping from the node's own namespace is answered."""
    return node.node.run(["ping", "-c", "2", "-W", "2", target], check=False).returncode == 0


def setup_state(cluster: Cluster, runner: ClusterNode) -> str:
    """Which parts of a runner's set-up exist: bridge, tunnel, route, NAT, Docker network."""
    links = {link["ifname"] for link in _ip_json(runner, "link")}
    parts = {
        "bridge": "kohaku-overlay" in links,
        "vxlan0": "vxlan0" in links,
        "route": _has_overlay_route(runner),
        "nat": "KRNET-POSTROUTING" in _rules(runner, "nat"),
        "network": OVERLAY_NETWORK in cluster.docker(runner, "network", "ls", check=False),
    }
    return "+".join(name for name, there in parts.items() if there) or "nothing"


def _ip_json(node: ClusterNode, *args: str) -> list[dict[str, object]]:
    return json.loads(node.node.run(["ip", "-j", *args]).stdout)  # type: ignore[no-any-return]


def _has_overlay_route(node: ClusterNode) -> bool:
    return any(route.get("dst") == OVERLAY_ROUTE for route in _ip_json(node, "route"))


def _rules(node: ClusterNode, table: str) -> str:
    return node.node.run(["iptables-save", "-t", table]).stdout


# -- a runner killed during its own set-up --------------------------------------------------------


@dataclass(frozen=True)
class KilledSetup:
    id_before: int | None
    found: tuple[str, ...]  # what of the set-up existed at each kill
    id_after: int | None  # in the runner's own record
    host_id_after: object  # in the host's record
    records_before: int  # on the host
    records_after: int
    reaches_host: bool

    def problems(self) -> list[str]:
        """The same id on both sides, no second id handed out, a working tunnel."""
        problems = []
        if self.id_before is None or (self.id_after, self.host_id_after) != (
            self.id_before,
            self.id_before,
        ):
            problems.append(
                f"id {self.id_before} before; after: {self.id_after} (runner), "
                f"{self.host_id_after} (host)"
            )
        if self.records_after != self.records_before:
            problems.append(f"the host's records went {self.records_before}->{self.records_after}")
        if not self.reaches_host:
            problems.append(f"{HOST_OVERLAY_IP} does not answer the runner")
        return problems

    def line(self) -> str:
        return (
            f"killed {len(self.found)} times after its welcome (set-up found: "
            f"{'; '.join(self.found)}); back as id {self.id_after} on both sides, "
            f"{self.records_after} records on the host; {HOST_OVERLAY_IP} "
            + ("answers" if self.reaches_host else "SILENT")
        )


def runner_killed_during_setup(
    cluster: Cluster, runner: ClusterNode, rng: random.Random, kills: int = 3
) -> KilledSetup:
    """`kills` times: start the runner and SIGKILL it as soon as its next link appears (or at a
    random moment of the rest of its set-up: route, rules, network), so each restart begins
    from what the last one left half done (from scratch after a complete one); then let it
    finish."""
    before = own_id(cluster, runner)
    records_before = int(cluster.status()["total"])  # type: ignore[arg-type]
    cluster.stop(runner)
    found: list[str] = []
    for _ in range(kills):
        if not found or found[-1] == COMPLETE:  # nothing left half done: start from scratch
            cluster.krnet(runner, "cleanup", "--yes")
        links, joins = _setup_links(runner), _joins(runner)
        cluster.start(runner)
        _wait("the runner's welcome", lambda joins=joins: _joins(runner) > joins, 60)
        if links != SETUP_LINKS:  # kill as soon as the next link appears
            _wait("the next link", lambda links=links: _setup_links(runner) != links, 30)
        else:  # its links are there: kill somewhere in the rest of the set-up
            time.sleep(rng.uniform(0, KILL_WINDOW))
        cluster.stop(runner, kill=True)
        found.append(setup_state(cluster, runner))
    cluster.start(runner)
    cluster.wait_for_runners()
    return KilledSetup(
        id_before=before,
        found=tuple(found),
        id_after=own_id(cluster, runner),
        host_id_after=host_entry(cluster, runner)["runner_id"],
        records_before=records_before,
        records_after=int(cluster.status()["total"]),  # type: ignore[arg-type]
        reaches_host=reaches(runner, HOST_OVERLAY_IP),
    )


def _setup_links(runner: ClusterNode) -> set[str]:
    """The links of the set-up the runner has (one cheap look, polled while it builds)."""
    output = runner.node.run(["ip", "-br", "link"]).stdout
    return SETUP_LINKS & {line.split()[0].split("@")[0] for line in output.splitlines()}


def _joins(runner: ClusterNode) -> int:
    try:
        return runner.log.read_text(errors="replace").count("joined as runner")
    except FileNotFoundError:
        return 0


def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """A finer poll than Cluster.wait_until, for moments that last a fraction of a second."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ProofFailed(f"timed out waiting for {what}")
        time.sleep(POLL)


# -- Docker stopped and started under a runner ----------------------------------------------------


@dataclass(frozen=True)
class DockerRestart:
    reaches_host_while_down: bool  # once the runner reported Docker gone
    active_while_down: bool
    subnet: str
    container_address: str  # a container started on the overlay network of the new dockerd
    container_reaches_host: bool

    def problems(self) -> list[str]:
        """The tunnel works without Docker; the overlay network is back and usable."""
        problems = []
        if not self.reaches_host_while_down:
            problems.append(f"{HOST_OVERLAY_IP} did not answer while Docker was down")
        if not self.active_while_down:
            problems.append("the host marked the runner inactive while its Docker was down")
        if ip_address(self.container_address or "0.0.0.0") not in ip_network(self.subnet):
            problems.append(f"the container got {self.container_address}, not in {self.subnet}")
        if not self.container_reaches_host:
            problems.append(f"the container cannot reach {HOST_OVERLAY_IP}")
        return problems

    def line(self) -> str:
        return (
            f"Docker gone: {HOST_OVERLAY_IP} "
            + ("answered" if self.reaches_host_while_down else "SILENT")
            + f", runner {'active' if self.active_while_down else 'INACTIVE'}; a new dockerd "
            f"got {OVERLAY_NETWORK} back; a container at {self.container_address} "
            + ("reached " if self.container_reaches_host else "could NOT reach ")
            + HOST_OVERLAY_IP
        )


def docker_restarted(cluster: Cluster, runner: ClusterNode) -> DockerRestart:
    """Stop the runner's dockerd (containers and state go too), check the tunnel, start a new
    dockerd, wait for krnet to give it the overlay network again and start a container on it."""
    from krnet.lab.dockerd import ensure_busybox_image

    assert runner.docker_host is not None
    cluster.stop_dockerd(runner)
    cluster.wait_until(
        "the runner to report Docker down",
        lambda: _observed(cluster, runner).get("docker_available") is False,
        30,
    )
    down = reaches(runner, HOST_OVERLAY_IP)
    active = host_entry(cluster, runner)["status"] == "active"
    cluster.start_dockerd(runner)
    ensure_busybox_image(runner.docker_host, IMAGE)
    cluster.wait_until(
        "the overlay network again",
        lambda: OVERLAY_NETWORK in cluster.docker(runner, "network", "ls"),
        60,
    )
    name = f"fault-{runner.name}"
    try:
        address = cluster.run_container(runner, name)
        ping = cluster.container(runner, name, "ping", "-c", "2", "-W", "2", HOST_OVERLAY_IP)
    finally:
        cluster.docker(runner, "rm", "-f", name, check=False)
        cluster.containers.pop(name, None)
    subnet = str(host_entry(cluster, runner)["subnet"])
    return DockerRestart(down, active, subnet, address, ping.returncode == 0)


def _observed(cluster: Cluster, runner: ClusterNode) -> dict[str, object]:
    """What the runner's last heartbeat told the host."""
    from krnet.core.record.reader import database_path, read_runners

    for record in read_runners(database_path(cluster.host.data_dir)) or []:
        if record.hostname == runner.node.hostname:
            return record.observed
    return {}


# -- the underlay link of a runner down and up ----------------------------------------------------


@dataclass(frozen=True)
class UnderlayFlap:
    id_before: object
    id_after: object
    reaches_host: bool  # after the link came back
    reaches_other_runner: bool

    def problems(self) -> list[str]:
        """Inactive while down (waited for), active again with its id, traffic flowing."""
        problems = []
        if self.id_after != self.id_before:
            problems.append(f"id {self.id_before} became {self.id_after}")
        if not self.reaches_host:
            problems.append(f"{HOST_OVERLAY_IP} does not answer after the link came back")
        if not self.reaches_other_runner:
            problems.append("the other runner's gateway does not answer across the host")
        return problems

    def line(self) -> str:
        flows = "traffic flows" if self.reaches_host and self.reaches_other_runner else "NO TRAFFIC"
        return (
            f"inactive while eth0 was down, active again as id {self.id_after} "
            f"(was {self.id_before}); {flows} to {HOST_OVERLAY_IP} and the other runner"
        )


def underlay_flap(cluster: Cluster, runner: ClusterNode, other: ClusterNode) -> UnderlayFlap:
    """`ip link set eth0 down` in the runner until the host marks it inactive, then up."""
    before = host_entry(cluster, runner)["runner_id"]
    runner.node.run(["ip", "link", "set", "eth0", "down"])
    try:
        cluster.wait_until(
            "the host to mark the runner inactive",
            lambda: host_entry(cluster, runner)["status"] == "inactive",
            60,
        )
    finally:
        runner.node.run(["ip", "link", "set", "eth0", "up"])
        runner.node.run(["ip", "route", "replace", "default", "via", GATEWAY])
    cluster.wait_until(
        "the runner active again", lambda: host_entry(cluster, runner)["status"] == "active", 90
    )
    return UnderlayFlap(
        id_before=before,
        id_after=host_entry(cluster, runner)["runner_id"],
        reaches_host=reaches(runner, HOST_OVERLAY_IP),
        reaches_other_runner=reaches(runner, f"10.{own_id(cluster, other)}.0.1"),
    )


# -- changed by hand while running ----------------------------------------------------------------


@dataclass(frozen=True)
class HandChange:
    """One thing a person did to a node, how to see it undone, and the event that says so."""

    node: ClusterNode
    what: str
    argv: tuple[str, ...]
    event: str  # a substring of the reconcile event expected on that node
    repaired: Callable[[], bool]


def hand_changes(cluster: Cluster) -> list[HandChange]:
    """What a person (or another tool) might do to a running cluster's links and rules."""
    host, first, second = cluster.host, cluster.nodes[0], cluster.nodes[1]
    remote = runner_underlay(2)

    def vxlan(name: str, key: str) -> object:
        return link_details(host, name)["linkinfo"]["info_data"][key]  # type: ignore[index]

    filter_rules = lambda: _rules(host, "filter")  # noqa: E731
    return [
        HandChange(
            host,
            "vxkr1 deleted",
            ("ip", "link", "del", "vxkr1"),
            "vxkr1: created",
            lambda: vxlan("vxkr1", "remote") == runner_underlay(1),
        ),
        HandChange(
            host,
            "vxkr2 remote changed",
            ("ip", "link", "set", "vxkr2", "type", "vxlan", "remote", "192.0.2.99"),
            f"vxkr2: remote 192.0.2.99 -> {remote}",
            lambda: vxlan("vxkr2", "remote") == remote,
        ),
        HandChange(
            host,
            "vxkr2 MTU lowered",
            ("ip", "link", "set", "vxkr2", "mtu", "1400"),
            "vxkr2: MTU 1400 -> 1450",
            lambda: link_details(host, "vxkr2")["mtu"] == 1450,
        ),
        HandChange(
            host,
            "port guard chain flushed",
            ("iptables", "-w", "-F", "KRNET-VXLAN"),
            "filter KRNET-VXLAN: added",
            lambda: filter_rules().count("-A KRNET-VXLAN") == 2,  # the set's ACCEPT, then DROP
        ),
        HandChange(
            host,
            "port guard set emptied",
            ("ipset", "flush", "krnet-vxlan"),
            "ipset krnet-vxlan: added",
            lambda: host.node.run(["ipset", "save", "krnet-vxlan"]).stdout.count("add ") == 2,
        ),
        HandChange(
            host,
            "FORWARD accept deleted",
            ("iptables", "-w", "-D", "KRNET-FORWARD", "-s", OVERLAY_ROUTE, "-j", "ACCEPT"),
            f"filter KRNET-FORWARD: added -s {OVERLAY_ROUTE} -j ACCEPT",
            lambda: f"-A KRNET-FORWARD -s {OVERLAY_ROUTE} -j ACCEPT" in filter_rules(),
        ),
        HandChange(
            first,
            "NAT chain flushed",
            ("iptables", "-w", "-t", "nat", "-F", "KRNET-POSTROUTING"),
            "nat KRNET-POSTROUTING: added",
            lambda: "MASQUERADE" in _rules(first, "nat"),
        ),
        HandChange(
            second,
            "overlay route deleted",
            ("ip", "route", "del", OVERLAY_ROUTE),
            f"route {OVERLAY_ROUTE}",
            lambda: _has_overlay_route(second),
        ),
    ]


@dataclass(frozen=True)
class Repair:
    what: str
    repaired: bool
    event: str  # the matching reconcile event, "" when none was recorded

    def problems(self) -> list[str]:
        """Undone by the next reconcile, with an event in that node's record."""
        problems = [] if self.repaired else [f"{self.what}: not repaired"]
        return problems + ([] if self.event else [f"{self.what}: no reconcile event"])

    def line(self) -> str:
        state = "repaired" if self.repaired else "NOT repaired"
        return f"{self.what}: {state}; event {self.event!r}"


def repaired_by_reconcile(cluster: Cluster, timeout: float = 45.0) -> list[Repair]:
    """Make every hand change at once; wait for the reconcile passes; what each left."""
    changes = hand_changes(cluster)
    marks = {node.name: _last_event(node) for node in [cluster.host, *cluster.nodes]}
    for change in changes:
        change.node.node.run(list(change.argv))
    deadline = time.monotonic() + timeout
    while True:
        repairs = [_repair(change, marks) for change in changes]
        # a node writes its events once its whole pass is done, a moment after the repairs
        if all(not r.problems() for r in repairs) or time.monotonic() > deadline:
            return repairs
        time.sleep(0.5)


def _repair(change: HandChange, marks: Mapping[str, int]) -> Repair:
    """What a hand change left: repaired or not, and the reconcile event that says so."""
    events = _events_since(change.node, marks[change.node.name])
    event = next((e for e in events if change.event in e), "")
    return Repair(f"{change.node.name}: {change.what}", _holds(change.repaired), event)


def _holds(predicate: Callable[[], bool]) -> bool:
    try:
        return bool(predicate())
    except (ProofFailed, KeyError, IndexError):
        return False


def _last_event(node: ClusterNode) -> int:
    from krnet.core.record.store import Store

    with Store.open(node.data_dir) as store:
        latest = store.events(limit=1)
    return latest[0].id if latest else 0


def _events_since(node: ClusterNode, mark: int) -> list[str]:
    """The messages of the node's reconcile events newer than `mark` (Store.events)."""
    from krnet.core.record.store import Store

    with Store.open(node.data_dir) as store:
        events = store.events(limit=500)
    return [event.message for event in events if event.id > mark and event.kind == "reconcile"]
