"""The SQLite record: who holds which runner id, and an event log; migrated on open.

Heavy (SQLAlchemy, SQLModel, Alembic): only commands that write or migrate import this module.
Every write is one `BEGIN IMMEDIATE` transaction, so decisions are serialised across threads
and processes; WAL lets readers (`node overlay`, the TUI) run beside a writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from sqlmodel import Session, col, func, select

from krnet.core.model.allocator import choose_runner_id
from krnet.core.model.plan import OverlayPlan
from krnet.core.model.records import (
    ACTIVE,
    INACTIVE,
    UNREPORTED,
    AllocationDecision,
    EventRecord,
    JoinRequest,
    RunnerRecord,
    identity_hash,
)
from krnet.core.record.database import (
    BEGIN_MODE,
    BUSY_TIMEOUT,
    current_revision,
    explained,
    migrate,
    open_engine,
)
from krnet.core.record.reader import database_path
from krnet.core.record.tables import EventRow, RunnerRow
from krnet.errors import StoreError

SIDECARS = ("-wal", "-shm")  # SQLite's WAL files hold the same rows as the database
log = logging.getLogger("krnet.record")


def _tighten(path: Path, mode: int) -> None:
    """`path` at most `mode` (the data dir 0700, the database 0600): the record holds runner
    identities. An existing wider one is fixed, with a warning."""
    try:
        found = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if found & ~mode:
        os.chmod(path, found & mode)
        log.warning("%s was mode %o, open to group or others: made it %o", path, found, mode)


_EVENT_KINDS = {
    "new": "join",
    "returning": "rejoin",
    "reclaimed": "reclaim",
    "reenrolled": "reenrol",
}
RELEASE_EVENT = "release"  # `krnet node release|prune` freed the id


class Store:
    """The record of one node, in `<data_dir>/krnet.db`; safe to share between threads."""

    @classmethod
    def open(cls, data_dir: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> Store:
        """The store of a data dir, creating the dir (0700) and the schema when missing."""
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # created 0600 before SQLite opens it: its WAL files take the database's mode
            os.close(os.open(database_path(data_dir), os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(
                f"cannot create data dir {data_dir} ({exc.strerror}): set --data-dir or "
                "KRNET_DATA_DIR to a writable directory"
            ) from exc
        store = cls(database_path(data_dir), busy_timeout=busy_timeout)
        # once the record is known to be ours (a refused one is left exactly as it was)
        _tighten(data_dir, 0o700)
        for path in (store.path, *(store.path.with_name(store.path.name + s) for s in SIDECARS)):
            _tighten(path, 0o600)
        return store

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._engine = open_engine(path, busy_timeout)
        try:
            with self._explained():
                self.migration = migrate(self._engine, path)
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def allocate(
        self,
        request: JoinRequest,
        *,
        plan: OverlayPlan,
        now: datetime,
        proven: int | None = None,
        runner_key: str | None = None,
    ) -> tuple[AllocationDecision, RunnerRecord]:
        """Give a joining runner its id (allocator policy) and record it, in one transaction.

        `proven`: the id whose key the join proved (it keeps its key). Otherwise the join is an
        enrolment and `runner_key` the key the host issues it (docs/protocol.md, "Enrolment").
        """
        with self._session(write=True) as session:
            rows = session.exec(select(RunnerRow)).all()
            records = [_record(row) for row in rows]
            decision = choose_runner_id(records, request, plan.max_runners, proven=proven)
            addresses = plan.runner(decision.runner_id)
            row = session.get(RunnerRow, decision.runner_id)
            returning = decision.kind == "returning"
            first_seen = row.first_seen if row is not None and returning else now
            joined = _joined(
                decision.runner_id,
                request,
                vni=addresses.vni,
                subnet=str(addresses.subnet),
                first_seen=first_seen,
                now=now,
            )
            row = _row(joined, row)
            if decision.runner_id != proven:
                row.runner_key = runner_key
            session.add(row)
            kind = _EVENT_KINDS[decision.kind]
            _log(session, now, kind, _join_message(decision, row), row.runner_id)
            session.flush()
            return decision, _record(row)

    def keep_own_allocation(
        self, runner_id: int, request: JoinRequest, *, vni: int, subnet: str, now: datetime
    ) -> RunnerRecord:
        """A runner's record of itself: one row, the id its host gave it (`node overlay`)."""
        with self._session(write=True) as session:
            for stale in session.exec(select(RunnerRow).where(RunnerRow.runner_id != runner_id)):
                session.delete(stale)
            row = session.get(RunnerRow, runner_id)
            if row is not None and (row.vni, row.subnet) == (vni, subnet):
                first_seen = row.first_seen
            else:
                first_seen = now
                message = f"the host gave this runner id {runner_id}: {subnet}, VNI {vni}"
                _log(session, now, "join", message, runner_id)
            joined = _joined(
                runner_id, request, vni=vni, subnet=subnet, first_seen=first_seen, now=now
            )
            row = _row(joined, row)
            session.add(row)
            session.flush()
            return _record(row)

    def forget_own_allocation(self, *, now: datetime, reason: str) -> list[int]:
        """A runner's record of itself once its host no longer gives it an id: emptied; the ids."""
        with self._session(write=True) as session:
            rows = list(session.exec(select(RunnerRow)))
            for row in rows:
                session.delete(row)
                _log(session, now, "lost", f"id {row.runner_id} is no longer ours: {reason}", None)
            return [row.runner_id for row in rows]

    def heartbeat(
        self, runner_id: int, *, now: datetime, observed: dict[str, object]
    ) -> RunnerRecord | None:
        """Note that a runner is alive and what it observes; None for an id not in the record."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner_id)
            if row is None:
                return None
            _change_status(session, row, ACTIVE, "is heard from again", now)
            row.last_seen = now
            row.observed = dict(observed)
            session.add(row)
            session.flush()
            return _record(row)

    def mark_inactive(self, *, older_than: datetime) -> list[int]:
        """Mark active runners silent since before `older_than` inactive; their ids."""
        with self._session(write=True) as session:
            silent = session.exec(
                select(RunnerRow)
                .where(RunnerRow.status == ACTIVE, col(RunnerRow.last_seen) < older_than)
                .order_by(col(RunnerRow.runner_id))
            ).all()
            for row in silent:
                reason = f"inactive: silent since {row.last_seen.isoformat()}"
                _change_status(session, row, INACTIVE, reason, datetime.now(timezone.utc))
            return [row.runner_id for row in silent]

    def release(self, runner_id: int) -> RunnerRecord | None:
        """Delete the record of a runner that left, freeing its id; the record, or None."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner_id)
            if row is None:
                return None
            record = _record(row)
            session.delete(row)
            message = f"runner {runner_id} ({row.hostname}) left; id {runner_id} is free"
            _log(session, datetime.now(timezone.utc), "leave", message, runner_id)
            return record

    def release_by_hand(
        self, runner: RunnerRecord, *, force: bool, now: datetime, why: str
    ) -> RunnerRecord | None:
        """Delete `runner`'s record for `krnet node release|prune`, with one `release` event,
        if it is still that runner and (unless `force`) not heard from since; None else."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner.runner_id)
            current = None if row is None else _record(row)
            if current is None or (current.identity_hash, current.first_seen) != (
                runner.identity_hash,
                runner.first_seen,
            ):
                return None
            if not force and current.last_seen != runner.last_seen:
                return None
            session.delete(row)
            who = f"runner {current.runner_id} ({current.hostname}, {current.physical_ip})"
            message = f"{who} released by hand ({why}); id {current.runner_id} is free"
            _log(session, now, RELEASE_EVENT, message, current.runner_id)
            return current

    def released_ids(self) -> list[int]:
        """Ids released by hand and not held since: their latest join, adopt or release event
        is a release and no record holds them (their tunnels must not be adopted back)."""
        lifecycle = [RELEASE_EVENT, "leave", "adopt", *_EVENT_KINDS.values()]
        with self._session() as session:
            latest = (
                select(col(EventRow.runner_id), func.max(col(EventRow.id)).label("last"))
                .where(col(EventRow.kind).in_(lifecycle), col(EventRow.runner_id).is_not(None))
                .group_by(col(EventRow.runner_id))
                .subquery()
            )
            rows = session.exec(
                select(EventRow.runner_id)
                .join(latest, col(EventRow.id) == latest.c.last)
                .where(EventRow.kind == RELEASE_EVENT)
            ).all()
            held = set(session.exec(select(RunnerRow.runner_id)).all())
            return sorted(rid for rid in rows if rid is not None and rid not in held)

    def adopt(
        self,
        runner_id: int,
        *,
        physical_ip: str,
        vni: int,
        subnet: str,
        now: datetime,
        vxlan_port: int = UNREPORTED,
        mtu: int = UNREPORTED,
    ) -> RunnerRecord:
        """Record as inactive a tunnel the kernel has and the record lost; the existing one else."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner_id)
            if row is not None:
                return _record(row)
            adopted = RunnerRecord(
                runner_id=runner_id,
                identity_hash=None,
                hostname=f"unknown-{runner_id}",
                physical_ip=physical_ip,
                vni=vni,
                subnet=subnet,
                status=INACTIVE,
                first_seen=now,
                last_seen=now,
                vxlan_id=vni - runner_id,
                vxlan_port=vxlan_port,
                mtu=mtu,
            )
            row = _row(adopted)
            session.add(row)
            message = (
                f"runner {runner_id}: tunnel to {physical_ip} (VNI {vni}, {subnet}) found in the "
                "kernel but not in the record; adopted as inactive"
            )
            _log(session, now, "adopt", message, runner_id)
            session.flush()
            return _record(row)

    def credentials(self, identity: str) -> tuple[int, str] | None:
        """The id and per-runner key of the enrolled runner with this identity, or None."""
        with self._session() as session:
            row = session.exec(
                select(RunnerRow).where(RunnerRow.identity_hash == identity_hash(identity))
            ).first()
            if row is None or row.runner_key is None:
                return None
            return row.runner_id, row.runner_key

    def runners(self) -> list[RunnerRecord]:
        with self._session() as session:
            rows = session.exec(select(RunnerRow).order_by(col(RunnerRow.runner_id))).all()
            return [_record(row) for row in rows]

    def runner(self, runner_id: int) -> RunnerRecord | None:
        with self._session() as session:
            row = session.get(RunnerRow, runner_id)
            return None if row is None else _record(row)

    def record_event(
        self, kind: str, message: str, runner_id: int | None = None, *, now: datetime | None = None
    ) -> None:
        with self._session(write=True) as session:
            _log(session, now or datetime.now(timezone.utc), kind, message, runner_id)

    def events(self, limit: int = 200) -> list[EventRecord]:
        """The latest events, most recently written first."""
        with self._session() as session:
            rows = session.exec(
                select(EventRow).order_by(col(EventRow.id).desc()).limit(limit)
            ).all()
            return [_event(row) for row in rows]

    def revision(self) -> str | None:
        with self._explained(), self._engine.connect() as connection:
            return current_revision(connection)

    def backup(self, dest: Path) -> None:
        """Copy the database consistently (SQLite online backup) to a file that must not exist."""
        try:
            dest.open("xb").close()
        except FileExistsError as exc:
            raise StoreError(
                f"{dest} already exists: krnet db backup never overwrites a file; "
                "choose a new name or move the old backup away"
            ) from exc
        except OSError as exc:
            raise StoreError(f"cannot write backup {dest} ({exc.strerror})") from exc
        try:
            with self._explained(), closing(self._engine.raw_connection()) as source:
                driver = source.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                with closing(sqlite3.connect(dest)) as target:
                    driver.backup(target)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: BEGIN IMMEDIATE for writes, committed on success."""
        mode = "IMMEDIATE" if write else "DEFERRED"
        with self._explained(), Session(self._engine, expire_on_commit=False) as session:
            session.connection(execution_options={BEGIN_MODE: mode})
            yield session
            if write:
                session.commit()

    def _explained(self) -> AbstractContextManager[None]:
        return explained(self.path, self.busy_timeout)


_RUNNER_FIELDS = tuple(field.name for field in fields(RunnerRecord))


def _record(row: RunnerRow) -> RunnerRecord:
    """A row as the record the rest of krnet reads: every field, times as aware UTC."""
    values = {name: getattr(row, name) for name in _RUNNER_FIELDS}
    values["first_seen"] = row.first_seen.astimezone(timezone.utc)
    values["last_seen"] = row.last_seen.astimezone(timezone.utc)
    values["observed"] = dict(row.observed or {})
    return RunnerRecord(**values)


def _row(record: RunnerRecord, row: RunnerRow | None = None) -> RunnerRow:
    """`record` written field by field into `row`, or into a new row."""
    values = {name: getattr(record, name) for name in _RUNNER_FIELDS}
    values["observed"] = dict(record.observed)
    if row is None:
        return RunnerRow(**values)
    for name, value in values.items():
        setattr(row, name, value)
    return row


def _event(row: EventRow) -> EventRecord:
    time = row.time.astimezone(timezone.utc)
    return EventRecord(row.id or 0, time, row.kind, row.runner_id, row.message)


def _joined(
    runner_id: int,
    request: JoinRequest,
    *,
    vni: int,
    subnet: str,
    first_seen: datetime,
    now: datetime,
) -> RunnerRecord:
    """The record of a runner that has just joined with `request`: active as of `now`."""
    said = asdict(request)
    return RunnerRecord(
        runner_id=runner_id,
        identity_hash=identity_hash(said.pop("identity")),
        **said,
        vni=vni,
        subnet=subnet,
        status=ACTIVE,
        first_seen=first_seen,
        last_seen=now,
    )


def _change_status(
    session: Session, row: RunnerRow, status: str, reason: str, now: datetime
) -> None:
    """Set a runner's status, with an event when it changes."""
    if row.status != status:
        row.status = status
        session.add(row)
        _log(
            session, now, status, f"runner {row.runner_id} ({row.hostname}) {reason}", row.runner_id
        )


def _log(session: Session, now: datetime, kind: str, message: str, runner_id: int | None) -> None:
    session.add(EventRow(time=now, kind=kind, runner_id=runner_id, message=message))


def _join_message(decision: AllocationDecision, row: RunnerRow) -> str:
    who = f"runner {row.runner_id} ({row.hostname}, {row.physical_ip})"
    previous = decision.previous
    if previous is None:
        return f"{who} joined: {row.subnet}, VNI {row.vni}"
    if decision.kind == "reenrolled":
        since = previous.last_seen.isoformat()
        return (
            f"{who} re-enrolled: a new runner key for {row.hostname}, whose old key has not "
            f"been heard from since {since}"
        )
    if decision.kind == "reclaimed":
        since = previous.last_seen.isoformat()
        return f"{who} joined, reclaiming the id of {previous.hostname} (silent since {since})"
    if previous.physical_ip != row.physical_ip:
        return f"{who} rejoined, address was {previous.physical_ip}"
    return f"{who} rejoined"
