"""The runner id policy of the reference, case by case and as properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krnet.core.model.allocator import choose_runner_id, find_returning
from krnet.core.model.records import ACTIVE, INACTIVE, JoinRequest, RunnerRecord, identity_hash
from krnet.errors import AlreadyEnrolledError, PoolExhaustedError

T0 = datetime(2026, 11, 28, 1, 0, 0, tzinfo=timezone.utc)


def request(
    hostname: str = "runner-a", physical_ip: str = "192.0.2.10", identity: str | None = None
) -> JoinRequest:
    return JoinRequest(identity, hostname, physical_ip, 100, 4789, 1450)


def record(
    runner_id: int,
    hostname: str | None = None,
    physical_ip: str | None = None,
    *,
    identity: str | None = None,
    status: str = ACTIVE,
    seen: int = 0,
) -> RunnerRecord:
    return RunnerRecord(
        runner_id=runner_id,
        identity_hash=identity_hash(identity),
        hostname=hostname or f"runner-{runner_id}",
        physical_ip=physical_ip or f"198.51.100.{runner_id}",
        vni=100 + runner_id,
        subnet=f"10.{runner_id}.0.0/16",
        status=status,
        first_seen=T0,
        last_seen=T0 + timedelta(seconds=seen),
        vxlan_id=100,
        vxlan_port=4789,
        mtu=1450,
    )


def test_first_runner_gets_id_1() -> None:
    decision = choose_runner_id([], request(), 255)
    assert (decision.runner_id, decision.kind, decision.previous) == (1, "new", None)


def test_ids_are_assigned_in_order_and_gaps_are_filled_first() -> None:
    assert choose_runner_id([record(1), record(2)], request(), 255).runner_id == 3
    assert choose_runner_id([record(1), record(3)], request(), 255).runner_id == 2


def test_inactive_records_keep_their_ids_while_the_pool_has_room() -> None:
    records = [record(1, status=INACTIVE), record(2, status=INACTIVE)]
    decision = choose_runner_id(records, request("new-runner"), 255)
    assert (decision.runner_id, decision.kind) == (3, "new")


def test_returning_runner_matched_by_hostname_keeps_its_id_from_a_new_address() -> None:
    records = [record(1), record(2, "runner-a", "192.0.2.10", status=INACTIVE)]
    decision = choose_runner_id(records, request("runner-a", "192.0.2.99"), 255)
    assert (decision.runner_id, decision.kind) == (2, "returning")
    assert decision.previous == records[1]


def test_a_runner_that_proved_its_key_keeps_its_id_whatever_its_hostname() -> None:
    records = [record(1, "runner-a"), record(2, "renamed", identity="machine-a")]
    decision = choose_runner_id(records, request("runner-a", identity="machine-a"), 255, proven=2)
    assert (decision.runner_id, decision.kind) == (2, "returning")


def test_an_enrolled_runner_is_never_taken_by_its_identity_or_hostname_while_active() -> None:
    records = [record(1, "runner-a", "192.0.2.10", identity="machine-a", seen=5)]
    for other in (
        request("runner-a", "192.0.2.99", "machine-b"),  # its hostname
        request("thief", "192.0.2.99", "machine-a"),  # its identity, read off the wire
        request("runner-a", "192.0.2.10"),
    ):
        with pytest.raises(AlreadyEnrolledError, match="runner-a is enrolled as runner 1"):
            choose_runner_id(records, other, 255)


def test_a_reinstalled_runner_is_re_enrolled_on_its_id_once_the_old_one_is_inactive() -> None:
    records = [record(1, "runner-a", identity="machine-a", status=INACTIVE)]
    decision = choose_runner_id(records, request("runner-a", identity="machine-b"), 255)
    assert (decision.runner_id, decision.kind, decision.previous) == (1, "reenrolled", records[0])


def test_an_enrolment_whose_welcome_was_lost_is_retried_at_once_by_the_same_identity() -> None:
    unused = record(1, "runner-a", identity="machine-a")  # enrolled, its key never used
    decision = choose_runner_id([unused], request("runner-a", identity="machine-a"), 255)
    assert (decision.runner_id, decision.kind) == (1, "reenrolled")
    used = replace(unused, observed={"mtu": 1450})  # a heartbeat proved the key
    with pytest.raises(AlreadyEnrolledError):
        choose_runner_id([used], request("runner-a", identity="machine-a"), 255)
    with pytest.raises(AlreadyEnrolledError):  # another identity: never
        choose_runner_id([unused], request("runner-a", identity="machine-b"), 255)


def test_an_enrolling_runner_claims_the_anonymous_record_of_its_hostname() -> None:
    records = [record(4, "runner-a")]
    decision = choose_runner_id(records, request("runner-a", identity="machine-a"), 255)
    assert (decision.runner_id, decision.kind) == (4, "returning")


def test_physical_address_matches_an_inactive_record_such_as_an_adopted_tunnel() -> None:
    records = [record(7, "unknown-7", "192.0.2.10", status=INACTIVE)]
    decision = choose_runner_id(records, request("runner-a", "192.0.2.10"), 255)
    assert (decision.runner_id, decision.kind) == (7, "returning")


def test_physical_address_never_takes_a_live_runner_under_another_name() -> None:
    records = [record(1, "runner-a", "192.0.2.10", status=ACTIVE)]
    decision = choose_runner_id(records, request("runner-b", "192.0.2.10"), 255)
    assert (decision.runner_id, decision.kind) == (2, "new")


def test_hostname_match_comes_before_address_match() -> None:
    records = [
        record(1, "runner-b", "192.0.2.10", status=INACTIVE),
        record(2, "runner-a", "192.0.2.20", status=INACTIVE),
    ]
    assert choose_runner_id(records, request("runner-a", "192.0.2.10"), 255).runner_id == 2


def test_reclaim_only_when_every_id_is_taken_and_least_recently_seen_first() -> None:
    records = [record(i, status=ACTIVE, seen=i) for i in range(1, 6)]
    records[1] = replace(records[1], status=INACTIVE, last_seen=T0 + timedelta(seconds=50))
    records[3] = replace(records[3], status=INACTIVE, last_seen=T0 + timedelta(seconds=10))
    decision = choose_runner_id(records, request("newcomer"), 5)
    assert (decision.runner_id, decision.kind) == (4, "reclaimed")
    assert decision.previous == records[3]


def test_reclaim_ties_go_to_the_lowest_id() -> None:
    records = [record(i, status=INACTIVE) for i in (3, 1, 2)]
    assert choose_runner_id(records, request("newcomer"), 3).runner_id == 1


def test_pool_exhausted_by_active_runners_says_how_many_and_what_to_do() -> None:
    records = [record(i) for i in range(1, 4)]
    with pytest.raises(PoolExhaustedError, match=r"all 3 runner ids are held by active runners"):
        choose_runner_id(records, request("newcomer"), 3)
    with pytest.raises(PoolExhaustedError, match="runner_timeout"):
        choose_runner_id(records, request("newcomer"), 3)


def test_returning_runner_still_gets_its_id_in_a_full_pool() -> None:
    records = [record(i) for i in range(1, 4)]
    assert choose_runner_id(records, request("runner-2"), 3).runner_id == 2


def test_records_outside_a_narrower_plan_take_no_part() -> None:
    records = [record(1), record(9, "runner-a", status=INACTIVE)]
    decision = choose_runner_id(records, request("runner-a"), 3)
    assert (decision.runner_id, decision.kind) == (2, "new")


def test_most_recently_seen_wins_among_several_hostname_matches() -> None:
    records = [record(1, "runner-a", seen=5), record(2, "runner-a", seen=9)]
    assert find_returning(records, request("runner-a", "203.0.113.1")) == records[1]


# --- properties: a simulated cluster under a random history of joins, silences, leaves --------

# (hostname, identity): two "twin" machines share a hostname but not their identity.
MACHINES = [(f"node-{i}", f"machine-{i}" if i % 2 else None) for i in range(10)]
MACHINES += [("twin", "twin-1"), ("twin", "twin-2")]
steps = st.lists(
    st.tuples(st.sampled_from(["join", "join", "silence", "leave"]), st.sampled_from(MACHINES)),
    max_size=60,
)


def owned_by(
    held: dict[int, RunnerRecord], hostname: str, identity: str | None
) -> RunnerRecord | None:
    """The record a machine holds in the simulated cluster."""
    for held_record in held.values():
        if identity is not None and held_record.identity_hash == identity_hash(identity):
            return held_record
        anonymous = held_record.identity_hash is None
        if identity is None and anonymous and held_record.hostname == hostname:
            return held_record
    return None


@settings(max_examples=300, deadline=None)
@given(history=steps, pool=st.integers(min_value=1, max_value=8))
def test_policy_invariants_over_random_histories(
    history: list[tuple[str, tuple[str, str | None]]], pool: int
) -> None:
    """Never an id twice, a returning machine always gets its id, reclaim takes the LRU, and an
    enrolled hostname is taken by another machine only while inactive."""
    held: dict[int, RunnerRecord] = {}
    for tick, (action, (hostname, identity)) in enumerate(history):
        owner = owned_by(held, hostname, identity)
        if action != "join":
            if owner is not None and action == "silence":
                held[owner.runner_id] = replace(owner, status=INACTIVE)
            elif owner is not None:
                del held[owner.runner_id]
            continue
        join = request(hostname, f"192.0.2.{MACHINES.index((hostname, identity)) + 1}", identity)
        proven = owner.runner_id if owner is not None and identity is not None else None
        try:
            decision = choose_runner_id(list(held.values()), join, pool, proven=proven)
        except AlreadyEnrolledError:
            assert owner is None
            assert any(
                r.hostname == hostname and r.identity_hash is not None and r.status == ACTIVE
                for r in held.values()
            )
            continue
        except PoolExhaustedError:
            assert owner is None
            assert len(held) == pool and all(r.status == ACTIVE for r in held.values())
            continue
        assert 1 <= decision.runner_id <= pool
        if owner is not None:
            assert (decision.kind, decision.runner_id) == ("returning", owner.runner_id)
        elif decision.kind == "reenrolled":
            victim = held[decision.runner_id]
            assert victim.status == INACTIVE and victim.hostname == hostname
        elif decision.kind == "new":
            assert decision.runner_id == min(set(range(1, pool + 1)) - set(held))
        else:
            assert decision.kind == "reclaimed" and len(held) == pool
            victim = held[decision.runner_id]
            assert victim.status == INACTIVE and decision.previous == victim
            assert victim.last_seen == min(
                r.last_seen for r in held.values() if r.status == INACTIVE
            )
        held[decision.runner_id] = replace(
            record(decision.runner_id, hostname, join.physical_ip, identity=identity),
            last_seen=T0 + timedelta(seconds=tick),
        )
        assert len({(r.hostname, r.identity_hash) for r in held.values()}) == len(held)
