"""The SQLite record: who holds which runner id, and an event log; migrated on open.

Heavy (SQLAlchemy, SQLModel, Alembic): only commands that write or migrate import this module.
Every write is one `BEGIN IMMEDIATE` transaction, so decisions are serialised across threads
and processes; WAL lets readers (`node overlay`, the TUI) run beside a writer. `Store` is built
from parts by responsibility: releases (`release.py`), a runner's own allocation (`own.py`)
and runner keys (`keys.py`); this module keeps allocation, liveness, adoption and the file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from sqlmodel import col, select

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
)
from krnet.core.record.database import BUSY_TIMEOUT, current_revision
from krnet.core.record.keys import RunnerKeys, forget_retired, retire
from krnet.core.record.own import OwnAllocation
from krnet.core.record.reader import database_path
from krnet.core.record.release import Releases
from krnet.core.record.rows import (
    JOIN_EVENTS,
    change_status,
    joined_record,
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


class Store(Releases, OwnAllocation, RunnerKeys):
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
            records = [to_record(row) for row in rows]
            decision = choose_runner_id(records, request, plan.max_runners, proven=proven)
            addresses = plan.runner(decision.runner_id)
            row = session.get(RunnerRow, decision.runner_id)
            if row is not None and decision.kind == "reclaimed":
                retire(session, row, now)  # its runner is answered with it when it comes back
            returning = decision.kind == "returning"
            first_seen = row.first_seen if row is not None and returning else now
            joined = joined_record(
                decision.runner_id,
                request,
                vni=addresses.vni,
                subnet=str(addresses.subnet),
                first_seen=first_seen,
                now=now,
            )
            row = to_row(joined, row)
            if decision.runner_id != proven:
                row.runner_key = runner_key
            elif row.identity_hash is not None:
                forget_retired(session, row.identity_hash)
            session.add(row)
            kind = JOIN_EVENTS[decision.kind]
            log_event(session, now, kind, _join_message(decision, row), row.runner_id)
            session.flush()
            return decision, to_record(row)

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
        with self._session(write=True) as session:
            log_event(session, now or datetime.now(timezone.utc), kind, message, runner_id)

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
