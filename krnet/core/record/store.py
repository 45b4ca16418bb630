"""The SQLite record: who holds which runner id, and an event log; migrated on open.

Heavy (SQLAlchemy, SQLModel, Alembic): only commands that write or migrate import this module.
Every write is one `BEGIN IMMEDIATE` transaction, so decisions are serialised across threads
and processes; WAL lets readers (`node overlay`, the TUI) run beside a writer. `Store` is built
from parts by responsibility: allocating ids to joins (`joins.py`), releases (`release.py`), a
runner's own allocation (`own.py`) and runner keys (`keys.py`); this module keeps liveness,
adoption and the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Table, bindparam, insert
from sqlmodel import col, select

from krnet.core.model.records import (
    ACTIVE,
    INACTIVE,
    UNREPORTED,
    EventRecord,
    RunnerRecord,
)
from krnet.core.record.database import BUSY_TIMEOUT, current_revision
from krnet.core.record.joins import Allocations
from krnet.core.record.keys import RunnerKeys
from krnet.core.record.own import OwnAllocation
from krnet.core.record.reader import database_path
from krnet.core.record.release import Releases
from krnet.core.record.rows import (
    change_status,
    log_event,
    to_event,
    to_record,
    to_row,
)
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


class Store(Allocations, Releases, OwnAllocation, RunnerKeys):
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

    def heartbeat(
        self, runner_id: int, *, now: datetime, observed: dict[str, object]
    ) -> RunnerRecord | None:
        """Note that a runner is alive and what it observes; None for an id not in the record."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner_id)
            if row is None:
                return None
            change_status(session, row, ACTIVE, "is heard from again", now)
            row.last_seen = now
            row.observed = dict(observed)
            session.add(row)
            session.flush()
            return to_record(row)

    def touch(
        self,
        times: Mapping[int, datetime],
        observed: Mapping[int, Mapping[str, object]] | None = None,
    ) -> None:
        """Write the last-seen times of active runners whose heartbeats said nothing new, and
        the `observed` of those that only added their `applied`, all in one transaction
        (`krnet.core.control.liveness`); other ids are left as they are."""
        table: Table = RunnerRow.__table__  # type: ignore[attr-defined]
        active = (table.c.runner_id == bindparam("id"), table.c.status == ACTIVE)
        touched = table.update().where(*active).values(last_seen=bindparam("seen"))
        reported = table.update().where(*active).values(observed=bindparam("observed"))
        with self._session(write=True) as session:
            connection = session.connection()
            connection.execute(
                touched, [{"id": runner_id, "seen": seen} for runner_id, seen in times.items()]
            )
            if observed:
                rows = [{"id": key, "observed": dict(value)} for key, value in observed.items()]
                connection.execute(reported, rows)

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
                change_status(session, row, INACTIVE, reason, datetime.now(timezone.utc))
            return [row.runner_id for row in silent]

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
                return to_record(row)
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
            row = to_row(adopted)
            session.add(row)
            message = (
                f"runner {runner_id}: tunnel to {physical_ip} (VNI {vni}, {subnet}) found in the "
                "kernel but not in the record; adopted as inactive"
            )
            log_event(session, now, "adopt", message, runner_id)
            session.flush()
            return to_record(row)

    def runners(self) -> list[RunnerRecord]:
        with self._session() as session:
            rows = session.exec(select(RunnerRow).order_by(col(RunnerRow.runner_id))).all()
            return [to_record(row) for row in rows]

    def runner(self, runner_id: int) -> RunnerRecord | None:
        with self._session() as session:
            row = session.get(RunnerRow, runner_id)
            return None if row is None else to_record(row)

    def record_event(
        self, kind: str, message: str, runner_id: int | None = None, *, now: datetime | None = None
    ) -> None:
        self.record_events(kind, [(message, runner_id)], now=now)

    def record_events(
        self, kind: str, events: Sequence[tuple[str, int | None]], *, now: datetime | None = None
    ) -> None:
        """Many events (message, runner id) in one transaction, in order: a batch's ~1,000
        changes cost one commit, not one each, and one executemany, not an object each."""
        when = now or datetime.now(timezone.utc)
        rows = [
            {"time": when, "kind": kind, "runner_id": runner_id, "message": message}
            for message, runner_id in events
        ]
        if not rows:
            return  # a pass that changed nothing commits nothing
        table: Table = EventRow.__table__  # type: ignore[attr-defined]
        with self._session(write=True) as session:
            session.connection().execute(insert(table), rows)

    def events(self, limit: int = 200) -> list[EventRecord]:
        """The latest events, most recently written first."""
        with self._session() as session:
            rows = session.exec(
                select(EventRow).order_by(col(EventRow.id).desc()).limit(limit)
            ).all()
            return [to_event(row) for row in rows]

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
