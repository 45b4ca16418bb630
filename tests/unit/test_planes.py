"""The planes' decisions with fakes of krnet's own handles: no root, no kernel, no Docker.

What the kernel, iptables and Docker then do with those decisions is proven by the lab tests
of the real handles (tests/lab/test_netlink.py, test_firewall.py, test_dockernet.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing has them from 3.11


import pytest
import sqlalchemy

from krnet.core.control.planes import (
    CountedEvents,
    NullHostDataPlane,
    RecordedEvents,
    make_host_dataplane,
    make_runner_dataplane,
)
from krnet.core.dataplane import probe
from krnet.core.dataplane.dockernet import NetworkSpec
from krnet.core.dataplane.firewall import FirewallPlan
from krnet.core.dataplane.host_plane import HostPlane
from krnet.core.dataplane.interfaces import Adoption, PeerEntry, VxlanSpec
from krnet.core.dataplane.probe import ProbeOutcome, ProbeTarget
from krnet.core.dataplane.runner_plane import RunnerPlane
from krnet.core.model.node_state import LinkInfo, VxlanInfo
from krnet.core.model.records import RunnerRecord
from krnet.core.model.settings import Settings
from krnet.core.protocol.messages import Allocation
from krnet.core.record.store import Store
from krnet.errors import DockerError, KernelError, KrnetError

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOST = Settings(mode="host", overlay_enabled=True, host_reachable_address="192.0.2.1")
RUNNER = Settings(mode="runner", overlay_enabled=True, reconcile_interval=3600.0)
WELCOME = (  # runner {id}'s allocation from the default plan, the host at {host}
    '{{"runner_id": {id}, "vni": 10{id}, "subnet": "10.{id}.0.0/16", "gateway": "10.{id}.0.1", '
    '"host_overlay_ip": "10.0.0.1", "host_ip_on_subnet": "10.{id}.0.254", "mtu": 1450, '
    '"host_physical_ip": "{host}", "runner_physical_ip": "192.0.2.1{id}", "vxlan_id": 100, '
    '"overlay_cidr": "10.0.0.0/8", "bridge_name": "kohaku-overlay", "vxlan_port": 4789, '
    '"heartbeat_interval": 5.0}}'
)


# -- fakes of the handles -------------------------------------------------------------------


@dataclass
class Journal:
    """Every call the fakes saw, in order, and what each `ensure` should report."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    changes: dict[str, list[str]] = field(default_factory=dict)  # call name -> its changes

    def note(self, name: str, argument: object) -> list[str]:
        self.calls.append((name, argument))
        return list(self.changes.pop(name, []))

    def named(self, name: str) -> list[Any]:
        return [argument for called, argument in self.calls if called == name]


@dataclass
class FakeSession:
    journal: Journal
    links: dict[str, LinkInfo]
    fail: KernelError | None = None
    refused: Sequence[str] = ()  # tunnels the kernel refuses

    def ensure_host_device(self, name: str, interface: IPv4Interface) -> list[str]:
        return self.journal.note("host_device", (name, interface))

    def ensure_bridge(
        self, name: str, *, interface: IPv4Interface, mtu: int, mac: str
    ) -> list[str]:
        if self.fail is not None:
            raise self.fail
        return self.journal.note("bridge", (name, interface, mtu))

    def ensure_vxlan(self, name: str, **spec: Unpack[VxlanSpec]) -> list[str]:
        if name in self.refused:
            raise KernelError(f"cannot create {name}: EEXIST")
        return self.journal.note("vxlan", (name, spec))

    def ensure_tunnels(self, specs: Mapping[str, VxlanSpec]) -> dict[str, list[str] | KrnetError]:
        outcome: dict[str, list[str] | KrnetError] = {}
        for name, spec in specs.items():
            try:
                outcome[name] = self.ensure_vxlan(name, **spec)
            except KernelError as exc:
                outcome[name] = exc
        return outcome

    def ensure_route(
        self, dst: IPv4Network, *, via: IPv4Address | None = None, dev: str | None = None
    ) -> list[str]:
        return self.journal.note("route", (dst, via))

    def ensure_peer_entries(self, vtep: str, entries: Sequence[PeerEntry]) -> list[str]:
        return self.journal.note("peer_entries", (vtep, list(entries)))

    def remove_link(self, name: str) -> list[str]:
        return self.journal.note("remove", name)


@dataclass
class FakeKernel:
    journal: Journal
    present: list[LinkInfo] = field(default_factory=list)
    fail: KernelError | None = None
    refused: Sequence[str] = ()

    @contextmanager
    def session(self, names: Iterable[str] | None = None) -> Iterator[FakeSession]:
        self.journal.note("session", None if names is None else list(names))
        present = {link.name: link for link in self.present}
        yield FakeSession(self.journal, present, self.fail, self.refused)

    def links(self) -> Mapping[str, LinkInfo]:
        return {link.name: link for link in self.present}

    def ensure_sysctl(self, key: str, value: str) -> list[str]:
        return self.journal.note("sysctl", (key, value))


@dataclass
class FakeFirewall:
    journal: Journal

    def ensure(self, plan: FirewallPlan) -> list[str]:
        return self.journal.note("firewall", plan)

    def remove(self, interfaces: Sequence[str], vxlan_port: int) -> list[str]:
        return self.journal.note("firewall_remove", (list(interfaces), vxlan_port))


@dataclass
class FakeDocker:
    journal: Journal
    down: bool = False

    def ensure(self, specs: Sequence[NetworkSpec]) -> list[str]:
        changes = self.journal.note("docker", [spec.name for spec in specs])
        if self.down:
            raise DockerError("Docker is not running: start dockerd")
        return changes

    def remove(self, name: str) -> list[str]:
        return self.journal.note("docker_remove", name) or [f"removed Docker network {name}"]


@dataclass
class FakeEvents:
    changes: list[tuple[str, int | None]] = field(default_factory=list)
    adoptions: list[Adoption] = field(default_factory=list)

    def changed(self, changes: Sequence[tuple[str, int | None]]) -> None:
        self.changes += changes

    def adopted(self, adoption: Adoption) -> None:
        self.adoptions.append(adoption)


def link(name: str, kind: str | None, vxlan: VxlanInfo | None = None) -> LinkInfo:
    return LinkInfo(name, 0, kind, 1450, True, None, None, vxlan=vxlan)


def tunnel(name: str, remote: str | None, vni: int) -> LinkInfo:
    return link(name, "vxlan", VxlanInfo(vni, None, remote, 4789, learning=False))


def record(runner_id: int, physical_ip: str) -> RunnerRecord:
    return RunnerRecord(
        runner_id=runner_id,
        identity_hash=None,
        hostname=f"runner-{runner_id}",
        physical_ip=physical_ip,
        vni=100 + runner_id,
        subnet=f"10.{runner_id}.0.0/16",
        status="active",
        first_seen=NOW,
        last_seen=NOW,
        vxlan_id=100,
        vxlan_port=4789,
        mtu=1450,
    )


def allocation(runner_id: int = 2, host_physical_ip: str = "192.0.2.1") -> Allocation:
    return Allocation.model_validate_json(
        WELCOME.format(id=runner_id, host=host_physical_ip), strict=False
    )


@dataclass
class Host:
    plane: HostPlane
    journal: Journal
    kernel: FakeKernel
    events: FakeEvents


def host(
    settings: Settings = HOST, present: Sequence[LinkInfo] = (), results_file: Path | None = None
) -> Host:
    journal = Journal()
    kernel = FakeKernel(journal, list(present))
    events = FakeEvents()

    def prober(targets: Sequence[ProbeTarget], mtu: int) -> list[ProbeOutcome]:
        journal.note("probe", ([target.runner_id for target in targets], mtu))
        return [ProbeOutcome(target.runner_id, 1.0, 0.5) for target in targets]

    plane = HostPlane(
        settings, kernel, FakeFirewall(journal), events, prober=prober, results_file=results_file
    )
    return Host(plane, journal, kernel, events)


def last_firewall(journal: Journal) -> FirewallPlan:
    plan = journal.named("firewall")[-1]
    assert isinstance(plan, FirewallPlan)
    return plan


# -- the host plane ---------------------------------------------------------------------------


def test_reconcile_adopts_tunnels_the_kernel_has_and_the_record_lost() -> None:
    present = [
        tunnel("vxkr1", "192.0.2.11", 101),  # recorded
        tunnel("vxkr3", "192.0.2.13", 103),  # lost by the record: adopted
        tunnel("vxkr4", None, 104),  # no remote: nobody to adopt
        link("vxkr5", "dummy"),  # not a tunnel
        link("eth0", None),
    ]
    node = host(present=present)
    node.plane.reconcile([record(1, "192.0.2.11")])
    assert node.events.adoptions == [Adoption(3, "192.0.2.13", 103, "10.3.0.0/16")]
    assert [name for name, _ in node.journal.named("vxlan")] == ["vxkr1"]
    plan = last_firewall(node.journal)
    assert plan.guard_peers == ("192.0.2.11", "192.0.2.13")
    assert plan.interfaces == ("vxkr1", "vxkr3")


def test_tunnels_beyond_the_plan_are_not_adopted() -> None:
    small = replace(HOST, overlay_runner_prefix=10)  # room for runners 1..3
    node = host(small, present=[tunnel("vxkr4", "192.0.2.14", 104)])
    node.plane.reconcile([])
    assert node.events.adoptions == []
    assert last_firewall(node.journal).guard_peers == ()


def test_reconcile_repairs_every_recorded_tunnel_from_one_dump() -> None:
    node = host()
    node.journal.changes["vxlan"] = ["vxkr1: remote 192.0.2.99 -> 192.0.2.11"]
    node.plane.reconcile([record(2, "192.0.2.12"), record(1, "192.0.2.11")])
    assert node.journal.named("session") == [None]
    vxlans = node.journal.named("vxlan")
    assert [name for name, _ in vxlans] == ["vxkr1", "vxkr2"]
    _, spec = vxlans[1]
    assert spec["remote"] == "192.0.2.12" and spec["vni"] == 102 and spec["local"] == "192.0.2.1"
    assert node.journal.named("sysctl") == [("net.ipv4.ip_forward", "1")]
    assert node.events.changes == [("vxkr1: remote 192.0.2.99 -> 192.0.2.11", None)]


def test_the_guard_admits_exactly_the_joined_runners() -> None:
    node = host()
    node.plane.runner_up(record(2, "192.0.2.12"), allocation(2))
    node.plane.runner_up(record(1, "192.0.2.11"), allocation(1))
    assert last_firewall(node.journal).guard_peers == ("192.0.2.11", "192.0.2.12")
    node.plane.runner_gone(2)
    plan = last_firewall(node.journal)
    assert (plan.guard_peers, plan.interfaces) == (("192.0.2.11",), ("vxkr1",))
    assert node.journal.named("remove") == ["vxkr2"]


def test_a_released_tunnel_left_in_the_kernel_is_removed_not_adopted() -> None:
    """`node release` whose removal failed, or a reconcile that read the record before it."""
    node = host(present=[tunnel("vxkr1", "192.0.2.11", 101), tunnel("vxkr2", "192.0.2.12", 102)])
    node.plane.runner_up(record(2, "192.0.2.12"), allocation(2))
    node.plane.runner_gone(2)
    node.plane.reconcile([record(1, "192.0.2.11"), record(2, "192.0.2.12")])  # a stale read
    assert node.events.adoptions == []
    assert [name for name, _ in node.journal.named("vxlan")] == ["vxkr2", "vxkr1"]  # join, pass
    assert node.journal.named("remove") == ["vxkr2", "vxkr2"]  # at once, and again by reconcile
    assert last_firewall(node.journal).guard_peers == ("192.0.2.11",)


def test_ids_released_before_a_restart_are_not_adopted_and_a_new_join_clears_them() -> None:
    node = host(present=[tunnel("vxkr3", "192.0.2.13", 103)])
    node.plane.released([3])
    node.plane.reconcile([])
    assert (node.events.adoptions, node.journal.named("remove")) == ([], ["vxkr3"])
    node.plane.runner_up(record(3, "192.0.2.33"), allocation(3))  # a new runner gets id 3
    node.plane.reconcile([record(3, "192.0.2.33")])
    assert last_firewall(node.journal).guard_peers == ("192.0.2.33",)
    assert node.journal.named("remove") == ["vxkr3"]


def test_a_join_reads_and_builds_only_its_own_tunnel() -> None:
    node = host()
    node.journal.changes["vxlan"] = ["vxkr2: created (VNI 102)"]
    node.plane.runner_up(record(2, "192.0.2.12"), allocation(2))
    assert node.journal.named("session") == [["kohaku-host", "vxkr2"]]
    assert node.events.changes == [("vxkr2: created (VNI 102)", 2)]


def test_a_batch_of_joins_is_one_kernel_pass_and_one_firewall_pass() -> None:
    node = host()
    node.kernel.refused = ["vxkr2"]
    batch = [(record(i, f"192.0.2.1{i}"), allocation(i)) for i in (1, 2, 3)]
    refused = node.plane.runners_up(batch)
    assert list(refused) == [2] and "vxkr2" in str(refused[2])  # only that join is refused
    assert node.journal.named("session") == [["kohaku-host", "vxkr1", "vxkr2", "vxkr3"]]
    assert [name for name, _ in node.journal.named("vxlan")] == ["vxkr1", "vxkr3"]
    assert len(node.journal.named("firewall")) == 1
    assert last_firewall(node.journal).guard_peers == ("192.0.2.11", "192.0.2.13")


class Chatty(Journal):
    """Every call reports one change naming it and what it was given first."""

    def note(self, name: str, argument: object) -> list[str]:
        super().note(name, argument)
        first = argument[0] if isinstance(argument, tuple) else ""
        return [f"{name} {first}".strip()]


def test_a_batch_records_every_change_once_in_order_in_one_commit_per_pass(
    tmp_path: Path,
) -> None:
    # Regression (issue 14): each change was its own transaction, ~1,000 commits per 255 joins.
    journal = Chatty()
    with Store.open(tmp_path) as store:
        commits: list[None] = []
        sqlalchemy.event.listen(store._engine, "commit", lambda _: commits.append(None))
        events = RecordedEvents(store)
        plane = HostPlane(
            HOST, FakeKernel(journal), FakeFirewall(journal), events, prober=lambda *_: []
        )
        plane.runners_up([(record(i, f"192.0.2.1{i}"), allocation(i)) for i in (1, 2, 3)])
        recorded = [(e.message, e.runner_id) for e in reversed(store.events())]
    assert recorded == [
        ("sysctl net.ipv4.ip_forward", None),
        ("host_device kohaku-host", None),
        ("vxlan vxkr1", 1),
        ("vxlan vxkr2", 2),
        ("vxlan vxkr3", 3),
        ("firewall", None),
    ]
    assert len(commits) == 2  # the links' changes as that pass ends, then the firewall's


def test_a_lone_join_the_kernel_refuses_raises() -> None:
    node = host()
    node.kernel.refused = ["vxkr2"]
    with pytest.raises(KernelError, match="vxkr2"):
        node.plane.runner_up(record(2, "192.0.2.12"), allocation(2))


def test_a_loopback_host_address_leaves_the_source_to_the_join() -> None:
    node = host(replace(HOST, host_reachable_address="127.0.0.1"))
    node.plane.reconcile([record(1, "192.0.2.11")])
    node.plane.runner_up(record(2, "192.0.2.12"), allocation(2, host_physical_ip="192.0.2.7"))
    node.plane.reconcile([record(1, "192.0.2.11")])
    locals_ = [spec["local"] for _, spec in node.journal.named("vxlan")]
    assert locals_ == [None, "192.0.2.7", "192.0.2.7"]


def test_a_runner_is_probed_only_once_its_tunnel_is_built() -> None:
    # Regression (issue 14): the prober picked up a runner whose tunnel did not exist yet.
    node = host()
    node.kernel.refused = ["vxkr2"]
    node.plane.runner_up(record(1, "192.0.2.11"), allocation(1))
    node.plane.runners_up([(record(2, "192.0.2.12"), allocation(2))])
    node.plane.probe([1, 2, 3])  # 3: recorded, never built
    assert node.journal.named("probe") == [([1], HOST.overlay_mtu)]


def test_probe_results_go_to_the_file_given(tmp_path: Path) -> None:
    results = tmp_path / probe.RESULTS_FILE
    node = host(results_file=results)
    node.plane.reconcile([record(1, "192.0.2.11"), record(2, "192.0.2.12")])
    node.plane.probe([2, 1])
    node.plane.probe([1])
    assert node.journal.named("probe") == [([1, 2], HOST.overlay_mtu), ([1], HOST.overlay_mtu)]
    published = probe.read_results(results, datetime.now(timezone.utc), max_age=60)
    assert list(published) == [1]  # runner 2's history is forgotten
    assert (published[1].sent, published[1].received) == (2, 2)


def test_without_a_results_file_probes_publish_nothing(tmp_path: Path) -> None:
    node = host()
    node.plane.reconcile([record(1, "192.0.2.11")])
    node.plane.probe([1])
    assert node.journal.named("probe") == [([1], HOST.overlay_mtu)]
    assert list(tmp_path.iterdir()) == []


# -- the runner plane -------------------------------------------------------------------------


@dataclass
class Runner:
    plane: RunnerPlane
    journal: Journal
    kernel: FakeKernel
    docker: FakeDocker
    events: FakeEvents


def runner(settings: Settings = RUNNER) -> Runner:
    journal = Journal()
    kernel, docker, events = FakeKernel(journal), FakeDocker(journal), FakeEvents()
    plane = RunnerPlane(settings, kernel, FakeFirewall(journal), docker, events)
    return Runner(plane, journal, kernel, docker, events)


def test_apply_builds_the_kernel_then_the_rules_then_docker_then_the_rules_again() -> None:
    node = runner()
    node.plane.apply(allocation(2))
    assert [name for name, _ in node.journal.calls] == [
        "session",
        "sysctl",
        "bridge",
        "vxlan",
        "sysctl",
        "sysctl",
        "sysctl",
        "route",
        "firewall",
        "docker",
        "firewall",
    ]
    assert node.journal.named("sysctl") == [  # redirects off in hub mode too (issue #15)
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.send_redirects", "0"),
        ("net.ipv4.conf.default.send_redirects", "0"),
        ("net.ipv4.conf.kohaku-overlay.send_redirects", "0"),
    ]
    assert node.journal.named("docker") == [["kohakuriver-net", "kohakuriver-overlay"]]
    assert node.journal.named("route") == [(IPv4Network("10.0.0.0/8"), IPv4Address("10.2.0.254"))]
    plan = last_firewall(node.journal)
    assert (plan.mode, plan.guard_peers, plan.interfaces) == (
        "runner",
        ("192.0.2.1",),
        ("kohaku-overlay", "vxlan0"),
    )
    assert node.plane.selected_network == "kohakuriver-overlay"


def test_rules_docker_displaced_are_put_back_and_reported() -> None:
    node = runner()

    class Displacing(FakeDocker):
        def ensure(self, specs: Sequence[NetworkSpec]) -> list[str]:
            node.journal.changes["firewall"] = ["filter FORWARD: moved jump back to position 1"]
            return super().ensure(specs)

    node.plane.docker = Displacing(node.journal)
    node.journal.changes["bridge"] = ["kohaku-overlay: created (bridge)"]
    node.plane.apply(allocation(2))
    assert node.events.changes == [
        ("kohaku-overlay: created (bridge)", 2),
        ("filter FORWARD: moved jump back to position 1", 2),
    ]


def test_a_kernel_failure_leaves_containers_the_default_network() -> None:
    node = runner()
    node.kernel.fail = KernelError("kohaku-overlay: cannot create bridge")
    with pytest.raises(KernelError, match="kohaku-overlay"):
        node.plane.apply(allocation(2))
    assert node.journal.named("docker") == [["kohakuriver-net"]]
    assert node.journal.named("firewall") == []
    assert node.plane.selected_network == "kohakuriver-net"


def test_docker_down_is_no_error_and_retried_on_every_heartbeat() -> None:
    node = runner()
    node.docker.down = True
    node.plane.apply(allocation(2))
    assert node.plane.selected_network == "kohakuriver-overlay"  # the overlay itself is up
    node.plane.observe()
    assert len(node.journal.named("docker")) == 2
    node.docker.down = False
    node.plane.observe()
    node.plane.observe()
    assert len(node.journal.named("docker")) == 3  # answered once: no more retries


def test_observe_repairs_drift_once_the_interval_has_passed() -> None:
    node = runner(Settings(mode="runner", overlay_enabled=True, reconcile_interval=0.0))
    node.plane.observe()
    assert node.journal.named("bridge") == []  # nothing allocated yet: nothing to repair
    node.plane.apply(allocation(2))
    node.journal.changes["vxlan"] = ["vxlan0: MTU 1500 -> 1450"]
    node.plane.observe()
    assert len(node.journal.named("bridge")) == 2
    assert ("vxlan0: MTU 1500 -> 1450", 2) in node.events.changes


def test_observe_leaves_the_kernel_alone_before_the_interval() -> None:
    node = runner()
    node.plane.apply(allocation(2))
    node.plane.observe()
    assert len(node.journal.named("bridge")) == 1


# -- the seam -------------------------------------------------------------------------------


def test_the_seam_records_changes_and_adoptions(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        events = RecordedEvents(store)
        events.changed([("vxkr1: MTU 1500 -> 1450", 1)])
        events.adopted(Adoption(3, "192.0.2.13", 103, "10.3.0.0/16"))
        messages = [(event.kind, event.message, event.runner_id) for event in store.events()]
        adopted = store.runner(3)
    assert ("reconcile", "vxkr1: MTU 1500 -> 1450", 1) in messages
    assert adopted is not None
    assert (adopted.physical_ip, adopted.vni, adopted.status) == ("192.0.2.13", 103, "inactive")


def test_the_seam_gives_the_host_plane_its_results_file(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        plane = make_host_dataplane(HOST, store)
        assert isinstance(plane, HostPlane)
        assert plane.results_file == tmp_path / probe.RESULTS_FILE
        assert isinstance(plane.events, CountedEvents)  # counted for /metrics, then recorded
        assert isinstance(plane.events.kept, RecordedEvents)
    assert isinstance(make_host_dataplane(Settings(mode="host")), NullHostDataPlane)
    assert isinstance(make_runner_dataplane(RUNNER), RunnerPlane)


def test_a_lost_allocation_takes_its_links_rules_and_network_away() -> None:
    node = runner()
    node.plane.apply(allocation(2))
    node.plane.withdraw()
    assert node.journal.named("docker_remove") == ["kohakuriver-overlay"]
    assert node.journal.named("remove") == ["vxlan0", "kohaku-overlay"]
    assert node.journal.named("firewall_remove") == [(["kohaku-overlay", "vxlan0"], 4789)]
    assert node.journal.named("docker")[-1] == ["kohakuriver-net"]
    assert node.plane.selected_network == "kohakuriver-net"


def test_a_lost_allocation_keeps_the_bridge_while_containers_use_it() -> None:
    node = runner()
    node.plane.apply(allocation(2))
    kept = "kept Docker network kohakuriver-overlay: containers web still use it"
    node.journal.changes["docker_remove"] = [kept]
    changes = node.plane.withdraw()
    assert node.journal.named("remove") == ["vxlan0"]
    assert kept in changes and "kept kohaku-overlay: containers are still attached to it" in changes


def test_a_failing_reconcile_is_logged_once_until_it_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression (issue 12, item 5): on ccbb48d every heartbeat logged "reconcile failed" again.
    node = runner(Settings(mode="runner", overlay_enabled=True, reconcile_interval=0.0))
    node.plane.apply(allocation(2))
    node.kernel.fail = KernelError("vxlan0: VNI 102 is held by vx-old: ip link del vx-old")
    with caplog.at_level("ERROR", logger="krnet.runner"):
        for _ in range(4):
            node.plane.observe()
        node.kernel.fail = KernelError("kohaku-overlay: another failure")
        node.plane.observe()
    assert [record.getMessage() for record in caplog.records] == [
        "reconcile failed: vxlan0: VNI 102 is held by vx-old: ip link del vx-old",
        "reconcile failed: kohaku-overlay: another failure",
    ]
