"""Direct mode's pure parts: VTEP values derived from a runner id, and each pair's path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from krnet.core.model.peers import (
    SWITCH_AFTER,
    PathBook,
    Peer,
    PeerPath,
    vtep_address,
    vtep_mac,
    vtep_vni,
)
from krnet.core.model.plan import OverlayPlan
from krnet.core.model.report import RunnerReport

PLAN = OverlayPlan.build("10.0.0.1", 8, 16, 100)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_vtep_values_follow_the_plan() -> None:
    assert vtep_mac(1) == "02:4b:52:00:00:01"
    assert vtep_mac(255) == "02:4b:52:00:00:ff"
    assert str(vtep_address(PLAN, 2)) == "10.2.0.0"
    assert vtep_vni(PLAN) == 100
    custom = OverlayPlan.build("172.16.0.1", 12, 20, 5000)
    assert str(vtep_address(custom, 3)) == "172.16.48.0"
    assert vtep_vni(custom) == 5000


@given(st.integers(min_value=1, max_value=255), st.integers(min_value=1, max_value=255))
def test_vtep_macs_are_unicast_locally_administered_and_distinct(a: int, b: int) -> None:
    first = int(vtep_mac(a).split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 0x02
    assert (vtep_mac(a) == vtep_mac(b)) == (a == b)


def test_a_vtep_mac_refuses_an_id_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="65536"):
        vtep_mac(65536)


def book_with(*peers: int) -> PathBook:
    book = PathBook()
    book.track([Peer(peer, f"192.0.2.1{peer}") for peer in peers], NOW)
    return book


def test_three_failed_probes_in_a_row_move_a_pair_to_the_hub_and_three_good_back() -> None:
    book = book_with(2)
    at = [NOW + timedelta(seconds=5 * i) for i in range(10)]
    assert book.record(2, False, at[0]) is None
    assert book.record(2, True, at[1]) is None  # the run is broken: counting starts over
    assert [book.record(2, False, t) for t in at[2:4]] == [None, None]
    event = book.record(2, False, at[4])
    assert event is not None and "hub" in event
    assert book.path(2) == "hub" and book.paths()[0].since == at[4]
    assert [book.record(2, True, t) for t in at[5:7]] == [None, None]
    event = book.record(2, True, at[7])
    assert event is not None and "back" in event
    (pair,) = book.paths()
    assert (pair.path, pair.since, pair.last_probe, pair.last_probe_ok) == (
        "direct",
        at[7],
        at[7],
        True,
    )


@given(st.lists(st.booleans(), max_size=40))
def test_a_pair_switches_only_after_a_full_run(outcomes: list[bool]) -> None:
    book = book_with(1)
    path, run, last = "direct", 0, None
    for i, ok in enumerate(outcomes):
        event = book.record(1, ok, NOW + timedelta(seconds=i))
        run = run + 1 if ok == last else 1
        last = ok
        wanted = "hub" if not ok else "direct"
        switched = path != wanted and run >= SWITCH_AFTER
        assert (event is not None) == switched
        path = wanted if switched else path
        assert book.path(1) == path


def test_tracking_adds_new_peers_direct_forgets_gone_ones_and_follows_an_address() -> None:
    book = book_with(2, 3)
    for i in range(SWITCH_AFTER):
        book.record(3, False, NOW + timedelta(seconds=i))
    book.track([Peer(3, "192.0.2.99"), Peer(4, "192.0.2.14")], NOW + timedelta(minutes=1))
    assert [(p.runner_id, p.physical_ip, p.path) for p in book.paths()] == [
        (3, "192.0.2.99", "hub"),
        (4, "192.0.2.14", "direct"),
    ]
    assert book.record(2, False, NOW) is None  # a forgotten peer's late probe is ignored
    assert book.path(9) == "direct"


def test_the_report_carries_direct_peers_only_when_there_are_some() -> None:
    pair = PeerPath(2, "192.0.2.12", "hub", NOW, NOW, False, 3, 0)
    report = RunnerReport(tunnel_present=True, direct_peers=(pair,))
    epoch = int(NOW.timestamp())
    assert report.to_wire()["direct_peers"] == [[2, "192.0.2.12", "hub", epoch, 3, 0]]
    detailed = report.to_wire(detail=True)
    assert detailed["direct_peers"] == [[2, "192.0.2.12", "hub", epoch, 3, 0, epoch, False]]
    assert RunnerReport.from_wire(detailed) == report
    assert "direct_peers" not in RunnerReport(tunnel_present=True).to_wire()
    for malformed in ([{"runner_id": 2}], [[2, "192.0.2.12", "mesh", 0, 0, 0]], [[True] * 6]):
        assert RunnerReport.from_wire({"direct_peers": malformed}).direct_peers == ()


def test_a_heartbeat_of_a_runner_with_254_peers_fits_the_bound_and_stays_the_same() -> None:
    """At 255 runners each runner reports 254 pairs: the heartbeat must fit MAX_OBSERVED (it
    was 47 KB, so the runner's own heartbeat was refused and it reconnected every 5 s), and a
    probe round that switches nothing must not change it (the host then writes only a time)."""
    from krnet.core.protocol.framing import canonical_json
    from krnet.core.protocol.messages import MAX_OBSERVED, Heartbeat

    def pairs(probed: datetime, successes: int) -> tuple[PeerPath, ...]:
        return tuple(
            PeerPath(m, f"198.51.100.{m % 250 + 1}", "direct", NOW, probed, True, 0, successes)
            for m in range(2, 256)
        )

    report = RunnerReport(tunnel_present=True, vni=101, direct_peers=pairs(NOW, 7))
    wire = report.to_wire()
    assert len(canonical_json(wire)) <= MAX_OBSERVED
    Heartbeat.model_validate(
        {"type": "heartbeat", "applied": None, "observed": wire, "seq": 2, "mac": "0" * 64}
    )
    later = RunnerReport(
        tunnel_present=True, vni=101, direct_peers=pairs(NOW + timedelta(seconds=5), 8)
    )
    assert later.to_wire() == wire  # the next round, all good: nothing the host must write
    back = RunnerReport.from_wire(wire).direct_peers
    assert [(p.runner_id, p.physical_ip, p.path, p.since) for p in back] == [
        (p.runner_id, p.physical_ip, p.path, p.since) for p in report.direct_peers
    ]
