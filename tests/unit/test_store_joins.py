"""Joins decided in batches (one transaction) by indexed queries; coalesced last-seen times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from krnet.core.model.plan import OverlayPlan
from krnet.core.model.records import ACTIVE, INACTIVE
from krnet.core.record.joins import BatchedJoin
from krnet.core.record.store import Store
from krnet.core.record.tables import RunnerRow
from krnet.errors import AlreadyEnrolledError, PoolExhaustedError
from tests.unit.test_store import PLAN, T0, join


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as opened:
        yield opened


@pytest.fixture
def loaded_rows() -> Iterator[list[int]]:
    """The runner ids of every row SQLAlchemy loads into Python while the test runs."""
    seen: list[int] = []

    def loaded(row: RunnerRow, _context: object) -> None:
        seen.append(row.runner_id)

    event.listen(RunnerRow, "load", loaded)
    yield seen
    event.remove(RunnerRow, "load", loaded)


def batched(hostname: str, index: int, **extra: object) -> BatchedJoin:
    return BatchedJoin(join(hostname, f"192.0.2.{index}", identity=hostname), **extra)  # type: ignore[arg-type]


def test_a_batch_gets_distinct_ids_in_order_with_one_join_event_each(store: Store) -> None:
    joins = [batched(f"runner-{i}", i) for i in range(1, 6)]
    outcomes = store.allocate_joins(joins, plan=PLAN, now=T0)
    ids = [outcome[1].runner_id for outcome in outcomes if isinstance(outcome, tuple)]
    assert ids == [1, 2, 3, 4, 5]
    assert [(e.kind, e.runner_id) for e in reversed(store.events())] == [("join", i) for i in ids]


def test_a_batch_decides_as_the_same_joins_one_by_one(tmp_path: Path) -> None:
    """Returning, new, reclaimed and refused joins in one batch: the same ids as alone."""
    small = OverlayPlan.build("10.0.0.1", 8, 10, 100)  # 3 runner blocks
    later = T0 + timedelta(minutes=5)
    batch = [
        batched("a", 1),
        batched("new-1", 11),
        batched("new-2", 12),
        batched("reclaimer", 13),
        batched("too-many", 14),
    ]
    results = []
    for name, together in (("together", True), ("alone", False)):
        with Store.open(tmp_path / name) as store:
            store.allocate_joins([batched("a", 1), batched("b", 2)], plan=small, now=T0)
            store.mark_inactive(older_than=T0 + timedelta(seconds=1))
            if together:
                outcomes = store.allocate_joins(batch, plan=small, now=later)
            else:
                outcomes = [store.allocate_joins([j], plan=small, now=later)[0] for j in batch]
            results.append(
                [o[1].runner_id if isinstance(o, tuple) else type(o).__name__ for o in outcomes]
            )
            kinds = [e.kind for e in reversed(store.events())]
            results.append(kinds)
    refused = "PoolExhaustedError"
    assert results[0] == results[2] == [1, 3, 2, refused, refused]
    assert results[1] == results[3]
    assert results[1][-1] == "refused"


def test_a_refused_join_of_a_batch_records_its_refusal_and_the_rest_are_admitted(
    store: Store,
) -> None:
    store.allocate_joins([batched("a", 1)], plan=PLAN, now=T0)  # enrolled: identity "a"
    enrolled = store.runner(1)
    assert enrolled is not None and enrolled.status == ACTIVE
    impostor = BatchedJoin(join("a", "192.0.2.99", identity="someone-else"))
    outcomes = store.allocate_joins([impostor, batched("b", 2)], plan=PLAN, now=T0)
    assert isinstance(outcomes[0], AlreadyEnrolledError)
    assert isinstance(outcomes[1], tuple) and outcomes[1][1].runner_id == 2
    assert store.events()[1].message == "a (192.0.2.99): already_enrolled"


def test_an_address_note_is_recorded_under_the_id_the_join_gets(store: Store) -> None:
    note = "connected from 192.0.2.200: NAT or a second address"
    store.allocate_joins([batched("a", 1), batched("b", 2, note=note)], plan=PLAN, now=T0)
    latest = store.events()[0]
    assert (latest.kind, latest.runner_id, latest.message) == ("address", 2, note)


def test_allocating_an_id_loads_only_the_records_the_join_may_return_to(
    tmp_path: Path, loaded_rows: list[int]
) -> None:
    with Store.open(tmp_path / "data") as store:
        crowd = [batched(f"runner-{i}", i % 50 + 1) for i in range(1, 251)]
        store.allocate_joins(crowd, plan=PLAN, now=T0)
        loaded_rows.clear()
        outcome = store.allocate_joins([batched("newcomer", 51)], plan=PLAN, now=T0)[0]
        assert isinstance(outcome, tuple) and outcome[1].runner_id == 251
        assert loaded_rows == []  # no record matches the newcomer: none is read
        store.allocate_joins([batched("runner-7", 8)], plan=PLAN, now=T0)  # returns to 7
        assert set(loaded_rows) == {7}  # not the active runners that claim the same address


def test_the_pool_exhausted_refusal_comes_from_indexed_queries_too(tmp_path: Path) -> None:
    small = OverlayPlan.build("10.0.0.1", 8, 10, 100)  # 3 runner blocks
    with Store.open(tmp_path / "data") as store:
        store.allocate_joins(
            [batched(name, i) for i, name in enumerate("abc", 1)], plan=small, now=T0
        )
        (outcome,) = store.allocate_joins([batched("d", 4)], plan=small, now=T0)
        assert isinstance(outcome, PoolExhaustedError)
        assert [r.runner_id for r in store.runners()] == [1, 2, 3]


def test_touch_writes_last_seen_of_active_runners_only_and_it_survives_a_reopen(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with Store.open(data) as store:
        store.allocate_joins([batched("a", 1), batched("b", 2)], plan=PLAN, now=T0)
        store.mark_inactive(older_than=T0 + timedelta(seconds=1))
        store.heartbeat(1, now=T0 + timedelta(seconds=2), observed={"x": 1})  # 1 active again
        before = len(store.events())
        later = T0 + timedelta(seconds=9)
        store.touch({1: later, 2: later, 99: later}, {1: {"x": 2}, 2: {"x": 3}})
        assert len(store.events()) == before  # last-seen times are no events
    with Store.open(data) as again:
        one, two = again.runners()
        assert (one.status, one.last_seen, one.observed) == (ACTIVE, later, {"x": 2})
        assert two.observed == {}  # nor is an inactive runner's observed
        assert (two.status, two.last_seen) == (INACTIVE, T0)  # an inactive runner is not touched
