"""The runner plane in direct mode with fakes of the handles: what it builds, probes, switches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

import pytest

from krnet.core.dataplane.interfaces import PeerEntry
from krnet.core.dataplane.probe import ProbeOutcome, ProbeTarget
from krnet.core.dataplane.runner_plane import RunnerPlane
from krnet.core.model.peers import Peer
from krnet.errors import KernelError
from tests.unit.test_planes import (
    RUNNER,
    FakeDocker,
    FakeEvents,
    FakeFirewall,
    FakeKernel,
    Journal,
    allocation,
    last_firewall,
)

PEERS = [Peer(1, "192.0.2.11"), Peer(2, "192.0.2.12"), Peer(3, "192.0.2.13")]


@dataclass
class Prober:
    """Answers every probe but those to the runners in `lost`."""

    lost: set[int] = field(default_factory=set)
    rounds: list[list[ProbeTarget]] = field(default_factory=list)

    def __call__(self, targets: Sequence[ProbeTarget], mtu: int) -> list[ProbeOutcome]:
        self.rounds.append(list(targets))
        return [
            ProbeOutcome(t.runner_id, None if t.runner_id in self.lost else 0.2, 0.1)
            for t in targets
        ]


def direct_runner() -> tuple[RunnerPlane, Journal, Prober, FakeEvents]:
    journal, prober, events = Journal(), Prober(), FakeEvents()
    plane = RunnerPlane(
        RUNNER, FakeKernel(journal), FakeFirewall(journal), FakeDocker(journal), events, prober
    )
    return plane, journal, prober, events


def entries(journal: Journal) -> list[PeerEntry]:
    vtep, listed = journal.named("peer_entries")[-1]
    assert vtep == "vxkrd"
    return list(listed)


def test_direct_mode_builds_the_vtep_and_every_other_peers_entries() -> None:
    plane, journal, _prober, _events = direct_runner()
    plane.apply_peers(PEERS)
    assert journal.named("vxlan") == []  # nothing allocated yet: built by apply
    plane.apply(allocation(2))
    (name, spec) = journal.named("vxlan")[-1]
    assert name == "vxkrd"
    assert spec == {
        "vni": 100,
        "local": "192.0.2.12",
        "remote": None,
        "port": 4789,
        "mtu": 1450,
        "address": IPv4Interface("10.2.0.0/32"),
        "mac": "02:4b:52:00:00:02",
    }
    assert entries(journal) == [
        PeerEntry("10.1.0.0", "02:4b:52:00:00:01", "192.0.2.11", "10.1.0.0/16", True),
        PeerEntry("10.3.0.0", "02:4b:52:00:00:03", "192.0.2.13", "10.3.0.0/16", True),
    ]
    plan = last_firewall(journal)
    assert plan.guard_peers == ("192.0.2.1", "192.0.2.11", "192.0.2.13")
    assert plan.interfaces == ("kohaku-overlay", "vxlan0", "vxkrd")


def test_a_new_peer_table_is_applied_at_once() -> None:
    plane, journal, _prober, _events = direct_runner()
    plane.apply(allocation(2))
    assert [name for name, _ in journal.named("vxlan")] == ["vxlan0"]  # hub mode: no VTEP
    plane.apply_peers(PEERS[:2])
    assert [e.vtep_ip for e in entries(journal)] == ["10.1.0.0"]
    assert last_firewall(journal).guard_peers == ("192.0.2.1", "192.0.2.11")


def test_three_lost_probes_withdraw_a_pairs_route_and_three_good_restore_it() -> None:
    plane, journal, prober, events = direct_runner()
    plane.apply_peers(PEERS)
    plane.apply(allocation(2))
    prober.lost = {3}
    for _ in range(3):
        plane.probe_peers()
    assert [(t.interface, t.gateway) for t in prober.rounds[0]] == [
        ("vxkrd", "10.1.0.0"),
        ("vxkrd", "10.3.0.0"),
    ]
    assert [e.direct for e in entries(journal)] == [True, False]
    assert any("runner 3: direct path lost" in change for change, _ in events.changes)
    report = plane.observe()
    assert [(p.runner_id, p.path) for p in report.direct_peers] == [(1, "direct"), (3, "hub")]
    prober.lost = set()
    for _ in range(3):
        plane.probe_peers()
    assert [e.direct for e in entries(journal)] == [True, True]
    assert plane.observe().direct_peers[1].path == "direct"


def test_hub_mode_probes_nothing_and_withdrawing_direct_mode_removes_the_vtep() -> None:
    plane, journal, prober, _events = direct_runner()
    plane.apply(allocation(2))
    plane.probe_peers()
    assert prober.rounds == [] and plane.observe().direct_peers == ()
    plane.apply_peers(PEERS)
    plane.withdraw_direct()
    assert journal.named("remove") == ["vxkrd"]
    plan = last_firewall(journal)
    assert (plan.guard_peers, plan.interfaces) == (("192.0.2.1",), ("kohaku-overlay", "vxlan0"))
    assert plane.observe().direct_peers == ()


def test_withdrawing_on_a_runner_that_never_was_direct_leaves_its_guard_alone() -> None:
    """A first hub welcome: the leftover check touches `vxkrd` only, no rule, no event."""
    plane, journal, _prober, events = direct_runner()
    plane.apply(allocation(2))
    journal.calls.clear()
    assert plane.withdraw_direct() == []
    assert [name for name, _ in journal.calls] == ["session", "remove"]
    assert journal.named("remove") == ["vxkrd"]  # the real kernel's remove_link reads first
    assert events.changes == []


def test_a_lost_allocation_in_direct_mode_takes_the_vtep_too() -> None:
    plane, journal, _prober, _events = direct_runner()
    plane.apply_peers(PEERS)
    plane.apply(allocation(2))
    plane.withdraw()
    assert journal.named("remove") == ["vxkrd", "vxlan0", "kohaku-overlay"]
    assert journal.named("firewall_remove") == [(["kohaku-overlay", "vxlan0", "vxkrd"], 4789)]


def test_a_peer_outside_the_plan_is_refused_with_the_settings_to_check() -> None:
    plane, _journal, _prober, _events = direct_runner()
    plane.apply(allocation(2))
    with pytest.raises(KernelError, match="overlay_runner_prefix"):
        plane.apply_peers([Peer(300, "192.0.2.30")])


def test_the_vtep_follows_the_hosts_scheme_from_the_allocation_not_local_settings() -> None:
    plane, journal, _prober, _events = direct_runner()
    custom = allocation(2).model_copy(
        update={
            "subnet": "172.16.32.0/20",
            "gateway": "172.16.32.1",
            "host_overlay_ip": "172.16.0.1",
            "host_ip_on_subnet": "172.16.32.254",
            "overlay_cidr": "172.16.0.0/12",
            "vxlan_id": 5000,
        }
    )
    plane.apply_peers(PEERS)
    plane.apply(custom)
    (_name, spec) = journal.named("vxlan")[-1]
    assert (spec["vni"], spec["address"]) == (5000, IPv4Interface("172.16.32.0/32"))
    assert [(e.vtep_ip, e.subnet) for e in entries(journal)] == [
        ("172.16.16.0", "172.16.16.0/20"),
        ("172.16.48.0", "172.16.48.0/20"),
    ]
