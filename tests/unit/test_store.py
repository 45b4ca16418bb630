"""The SQLite record: round trips, the policy applied in one transaction, locking, backups."""

from __future__ import annotations

import multiprocessing
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event

from krnet.core.model.plan import OverlayPlan
from krnet.core.model.records import (
    ACTIVE,
    INACTIVE,
    UNREPORTED,
    JoinRequest,
    RunnerRecord,
    identity_hash,
)
from krnet.core.record.reader import SCHEMA_HEAD, database_path, read_events, read_runners
from krnet.core.record.store import Store
from krnet.core.record.tables import RunnerRow
from krnet.errors import PoolExhaustedError, StoreError

ROOT = Path(__file__).resolve().parents[2]
PLAN = OverlayPlan.build("10.0.0.1", 8, 16, 100)
T0 = datetime(2026, 11, 28, 1, 2, 3, tzinfo=timezone.utc)


def join(
    hostname: str, physical_ip: str = "192.0.2.10", identity: str | None = None
) -> JoinRequest:
    return JoinRequest(identity, hostname, physical_ip, 100, 4789, 1450)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as opened:
        yield opened


def test_a_runner_row_holds_the_fields_of_a_runner_record_and_the_runner_key() -> None:
    names = [field.name for field in fields(RunnerRecord)]
    assert list(RunnerRow.model_fields) == [*names[:2], "runner_key", *names[2:]]


def test_open_creates_a_private_data_dir_and_a_database_at_head(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    with Store.open(data_dir) as store:
        assert store.path == database_path(data_dir)
        assert store.revision() == SCHEMA_HEAD
        assert (store.migration.before, store.migration.after) == (None, SCHEMA_HEAD)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    with sqlite3.connect(database_path(data_dir)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with Store.open(data_dir) as again:
        assert (again.migration.before, again.migration.after) == (SCHEMA_HEAD, SCHEMA_HEAD)


def test_new_runner_record_holds_the_plan_and_what_it_reported(store: Store) -> None:
    decision, record = store.allocate(
        JoinRequest("machine-a", "runner-a", "192.0.2.10", 100, 4789, 1400), plan=PLAN, now=T0
    )
    assert (decision.runner_id, decision.kind) == (1, "new")
    assert record == store.runner(1)
    assert (record.vni, record.subnet, record.status) == (101, "10.1.0.0/16", ACTIVE)
    assert (record.identity_hash, record.hostname, record.physical_ip) == (
        identity_hash("machine-a"),
        "runner-a",
        "192.0.2.10",
    )
    assert (record.vxlan_id, record.vxlan_port, record.mtu) == (100, 4789, 1400)
    assert record.first_seen == record.last_seen == T0
    assert record.last_seen.tzinfo is not None
    assert [(e.kind, e.runner_id) for e in store.events()] == [("join", 1)]


def test_returning_runner_keeps_id_and_first_seen_and_updates_its_address(store: Store) -> None:
    store.allocate(join("runner-a"), plan=PLAN, now=T0)
    store.allocate(join("runner-b", "192.0.2.11"), plan=PLAN, now=T0)
    store.heartbeat(1, now=T0, observed={"mtu": 1450})
    later = T0 + timedelta(minutes=5)
    decision, record = store.allocate(join("runner-a", "192.0.2.99"), plan=PLAN, now=later)
    assert (decision.runner_id, decision.kind) == (1, "returning")
    assert decision.previous is not None and decision.previous.physical_ip == "192.0.2.10"
    assert (record.first_seen, record.last_seen, record.physical_ip) == (T0, later, "192.0.2.99")
    assert record.observed == {}
    assert store.events(limit=1)[0].kind == "rejoin"
    assert "address was 192.0.2.10" in store.events(limit=1)[0].message


def test_reclaim_takes_the_least_recently_seen_inactive_id_when_the_pool_is_full(
    tmp_path: Path,
) -> None:
    small = OverlayPlan.build("10.0.0.1", 8, 10, 100)  # 3 runner blocks
    with Store.open(tmp_path) as store:
        for i, name in enumerate(["a", "b", "c"]):
            store.allocate(join(name, f"192.0.2.{i + 1}"), plan=small, now=T0 + timedelta(i))
        assert store.mark_inactive(older_than=T0 + timedelta(days=5)) == [1, 2, 3]
        store.heartbeat(1, now=T0 + timedelta(days=6), observed={})  # a is back: active again
        late = T0 + timedelta(days=7)
        decision, record = store.allocate(join("d", "192.0.2.4"), plan=small, now=late)
        assert (decision.runner_id, decision.kind) == (2, "reclaimed")
        assert decision.previous is not None and decision.previous.hostname == "b"
        assert (record.hostname, record.first_seen, record.status) == ("d", late, ACTIVE)
        assert store.events(limit=1)[0].kind == "reclaim"
        store.allocate(join("e", "192.0.2.5"), plan=small, now=late)  # takes c's id
        events_before = store.events()
        with pytest.raises(PoolExhaustedError):
            store.allocate(join("f", "192.0.2.6"), plan=small, now=late)
        refusal, *rest = store.events()
        assert (refusal.kind, refusal.message) == ("refused", "f (192.0.2.6): pool_exhausted")
        assert rest == events_before  # the refusal alone: no record changed
        assert [r.hostname for r in store.runners()] == ["a", "d", "e"]


def test_heartbeat_records_observed_state_and_revives_an_inactive_runner(store: Store) -> None:
    assert store.heartbeat(9, now=T0, observed={}) is None
    store.allocate(join("runner-a"), plan=PLAN, now=T0)
    store.mark_inactive(older_than=T0 + timedelta(seconds=1))
    record = store.heartbeat(1, now=T0 + timedelta(seconds=5), observed={"mtu": 1400, "vni": 101})
    assert record is not None and record == store.runner(1)
    assert record.observed == {"mtu": 1400, "vni": 101}
    assert (record.status, record.last_seen) == (ACTIVE, T0 + timedelta(seconds=5))
    assert store.events(limit=1)[0].kind == "active"


def test_mark_inactive_only_touches_active_runners_silent_since_the_cutoff(store: Store) -> None:
    store.allocate(join("old", "192.0.2.1"), plan=PLAN, now=T0)
    store.allocate(join("fresh", "192.0.2.2"), plan=PLAN, now=T0 + timedelta(seconds=60))
    assert store.mark_inactive(older_than=T0 + timedelta(seconds=30)) == [1]
    assert store.mark_inactive(older_than=T0 + timedelta(seconds=30)) == []
    assert [r.status for r in store.runners()] == [INACTIVE, ACTIVE]
    assert [(e.kind, e.runner_id) for e in store.events(limit=1)] == [(INACTIVE, 1)]


def test_release_frees_the_id_for_the_next_runner(store: Store) -> None:
    store.allocate(join("a", "192.0.2.1"), plan=PLAN, now=T0)
    store.allocate(join("b", "192.0.2.2"), plan=PLAN, now=T0)
    released = store.release(1)
    assert released is not None and released.hostname == "a"
    assert store.release(1) is None
    assert store.allocate(join("c", "192.0.2.3"), plan=PLAN, now=T0)[0].runner_id == 1
    assert [e.kind for e in store.events()].count("leave") == 1


def test_adopted_tunnel_is_inactive_until_its_runner_returns_from_that_address(
    store: Store,
) -> None:
    adopted = store.adopt(4, physical_ip="192.0.2.40", vni=104, subnet="10.4.0.0/16", now=T0)
    assert (adopted.hostname, adopted.status, adopted.vxlan_id) == ("unknown-4", INACTIVE, 100)
    assert (adopted.vxlan_port, adopted.mtu) == (UNREPORTED, UNREPORTED)
    again = store.adopt(4, physical_ip="192.0.2.99", vni=104, subnet="10.4.0.0/16", now=T0)
    assert again == adopted
    assert [e.kind for e in store.events()] == ["adopt"]
    decision, record = store.allocate(join("runner-d", "192.0.2.40"), plan=PLAN, now=T0)
    assert (decision.runner_id, decision.kind) == (4, "returning")
    assert (record.hostname, record.status) == ("runner-d", ACTIVE)


def test_events_are_newest_first_and_limited(store: Store) -> None:
    for i in range(5):
        store.record_event("note", f"event {i}", now=T0 + timedelta(seconds=i))
    store.record_event("note", "with a runner", 3, now=T0 + timedelta(seconds=9))
    events = store.events(limit=3)
    assert [e.message for e in events] == ["with a runner", "event 4", "event 3"]
    assert (events[0].runner_id, events[0].time) == (3, T0 + timedelta(seconds=9))


def test_many_events_are_recorded_in_order_once_in_one_commit(store: Store) -> None:
    commits: list[None] = []
    event.listen(store._engine, "commit", lambda _: commits.append(None))
    batch = [(f"vxkr{i}: created", i) for i in range(1, 301)] + [("guard: 300 peers", None)]
    store.record_events("reconcile", batch, now=T0)
    store.record_events("reconcile", [], now=T0)  # nothing changed: nothing written
    assert len(commits) == 1
    recorded = [(e.message, e.runner_id) for e in reversed(store.events(limit=1000))]
    assert recorded == batch
    assert {(e.kind, e.time) for e in store.events(limit=1000)} == {("reconcile", T0)}


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="timezone"):
        store.allocate(join("a"), plan=PLAN, now=datetime(2026, 11, 28, 1, 2, 3))
    assert store.runners() == []


def test_fast_reader_sees_exactly_what_the_store_wrote(store: Store) -> None:
    store.allocate(join("a", "192.0.2.1", "machine-a"), plan=PLAN, now=T0)
    store.allocate(join("b", "192.0.2.2"), plan=PLAN, now=T0)
    store.heartbeat(2, now=T0 + timedelta(seconds=1), observed={"mtu": 1400, "local": "x"})
    assert read_runners(store.path) == store.runners()
    assert read_runners(store.path.parent / "missing.db") == []


def test_fast_reader_reads_the_latest_events_without_migrating(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    with Store(path) as store:
        store.allocate(join("a", "192.0.2.1"), plan=PLAN, now=T0)
        store.record_event("adopt", "a tunnel found", 1, now=T0 + timedelta(seconds=1))
        assert read_events(path, 200) == store.events()
        assert read_events(path, 1) == store.events(limit=1)
    assert read_events(tmp_path / "missing.db", 200) == []
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0001_initial'")
    db.close()
    before = path.read_bytes()
    assert read_events(path, 200) is None  # behind head: left to the store, file unchanged
    assert path.read_bytes() == before


def test_a_snapshot_reads_the_event_log_without_the_store(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.allocate(join("a", "192.0.2.1"), plan=PLAN, now=T0)
    probe = (
        "import sys\nfrom pathlib import Path\n"
        "from krnet.core.model.settings import LoadedSettings, Settings\n"
        "from krnet.core.observe.gather import _events\n"
        f"events = _events(LoadedSettings(Settings(), data_dir=Path({str(tmp_path)!r})))\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'sqlmodel', 'alembic') if m in sys.modules)\n"
        "print([event.kind for event in events], heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['join'] []"


def test_backup_is_a_consistent_copy_and_never_overwrites(store: Store, tmp_path: Path) -> None:
    store.allocate(join("a"), plan=PLAN, now=T0)
    dest = tmp_path / "backup.db"
    store.backup(dest)
    with Store(dest) as copy:
        assert copy.runners() == store.runners()
        assert copy.revision() == SCHEMA_HEAD
    dest.write_bytes(b"precious")
    with pytest.raises(StoreError, match="already exists"):
        store.backup(dest)
    assert dest.read_bytes() == b"precious"
    with pytest.raises(StoreError, match="cannot write backup"):
        store.backup(tmp_path / "no-such-dir" / "backup.db")


def test_a_writer_holding_the_lock_beyond_the_busy_timeout_changes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path, busy_timeout=0.2) as store:
        store.allocate(join("a"), plan=PLAN, now=T0)
        holder = sqlite3.connect(store.path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError, match=r"is locked by another process.*nothing was"):
                store.allocate(join("b", "192.0.2.2"), plan=PLAN, now=T0)
            assert [r.hostname for r in store.runners()] == ["a"]  # WAL: readers still read
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.allocate(join("b", "192.0.2.2"), plan=PLAN, now=T0)[0].runner_id == 2


def test_threads_sharing_one_store_never_get_the_same_id(store: Store) -> None:
    def allocate(n: int) -> int:
        ip = f"198.51.100.{n + 1}"
        return store.allocate(join(f"thread-{n}", ip), plan=PLAN, now=T0)[1].runner_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(allocate, range(60)))
    assert sorted(ids) == list(range(1, 61))


PROCESSES = 4
JOINS_PER_PROCESS = 40


def _join_many(path: str, worker: int) -> list[tuple[str, int]]:
    """One process's share of the concurrent joins: (hostname, id it was given)."""
    given = []
    with Store(Path(path)) as store:
        for i in range(JOINS_PER_PROCESS):
            hostname = f"p{worker}-runner-{i}"
            address = f"203.0.113.{worker * JOINS_PER_PROCESS + i}"
            decision, _ = store.allocate(
                join(hostname, address), plan=PLAN, now=datetime.now(timezone.utc)
            )
            given.append((hostname, decision.runner_id))
    return given


def test_processes_allocating_at_once_never_get_the_same_id(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    Store.open(tmp_path).close()
    context = multiprocessing.get_context("fork")
    with context.Pool(PROCESSES) as pool:
        first = pool.starmap(_join_many, [(str(path), w) for w in range(PROCESSES)])
        again = pool.starmap(_join_many, [(str(path), w) for w in range(PROCESSES)])
    given = [pair for share in first for pair in share]
    ids = [runner_id for _, runner_id in given]
    assert sorted(ids) == list(range(1, PROCESSES * JOINS_PER_PROCESS + 1))
    assert sorted(pair for share in again for pair in share) == sorted(given)
    with Store(path) as store:
        assert {(r.hostname, r.runner_id) for r in store.runners()} == set(given)
        kinds = [e.kind for e in store.events(limit=1000)]
    assert (kinds.count("join"), kinds.count("rejoin")) == (len(given), len(given))


def test_a_runner_keeps_exactly_its_own_allocation(store: Store) -> None:
    request = JoinRequest("id-a", "runner-a", "192.0.2.11", 100, 4789, 1450)
    store.keep_own_allocation(3, request, vni=103, subnet="10.3.0.0/16", now=T0)
    again = store.keep_own_allocation(
        3, request, vni=103, subnet="10.3.0.0/16", now=T0 + timedelta(seconds=5)
    )
    assert (again.runner_id, again.vni, again.subnet, again.status) == (
        3,
        103,
        "10.3.0.0/16",
        ACTIVE,
    )
    assert again.first_seen == T0 and again.last_seen == T0 + timedelta(seconds=5)
    moved = store.keep_own_allocation(7, request, vni=107, subnet="10.7.0.0/16", now=T0)
    assert [r.runner_id for r in store.runners()] == [7] and moved.hostname == "runner-a"
    assert [e.kind for e in store.events()].count("join") == 2


def test_a_runner_whose_record_goes_keeps_a_retired_key_until_it_proves_a_new_one(
    tmp_path: Path,
) -> None:
    one = OverlayPlan.build("10.0.0.1", 8, 9, 100)  # a pool of one id
    a, b = "a" * 32, "b" * 32
    with Store.open(tmp_path) as store:
        store.allocate(join("a", "192.0.2.1", a), plan=one, now=T0, runner_key="1" * 64)
        store.mark_inactive(older_than=T0 + timedelta(days=1))
        later = T0 + timedelta(days=2)
        store.allocate(join("b", "192.0.2.2", b), plan=one, now=later, runner_key="2" * 64)
        assert store.credentials(a) is None and store.retired_key(a) == "1" * 64  # reclaimed
        store.release(1)
        assert store.retired_key(b) == "2" * 64  # left
        store.allocate(join("a", "192.0.2.1", a), plan=one, now=later, runner_key="3" * 64)
        assert store.retired_key(a) == "1" * 64  # until the welcome's key is proven
        store.allocate(join("a", "192.0.2.1", a), plan=one, now=later, proven=1)
        assert store.retired_key(a) is None and store.credentials(a) == (1, "3" * 64)


def test_only_the_most_recent_retired_keys_are_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from krnet.core.record import keys

    monkeypatch.setattr(keys, "RETIRED_KEPT", 2)
    identities = [str(i) * 32 for i in range(1, 4)]
    for i, identity in enumerate(identities, start=1):
        request = join(f"r{i}", f"192.0.2.{i}", identity)
        decision, _ = store.allocate(request, plan=PLAN, now=T0, runner_key=str(i) * 64)
        assert store.release(decision.runner_id) is not None
    assert [store.retired_key(identity) for identity in identities] == [None, "2" * 64, "3" * 64]
