"""Rows and records: the one translation between the SQLModel tables and the values krnet reads,
and the event each write logs (shared by every part of the store)."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime, timezone

from sqlmodel import Session

from krnet.core.model.records import ACTIVE, EventRecord, JoinRequest, RunnerRecord, identity_hash
from krnet.core.record.tables import EventRow, RunnerRow

JOIN_EVENTS = {
    "new": "join",
    "returning": "rejoin",
    "reclaimed": "reclaim",
    "reenrolled": "reenrol",
}
RELEASE_EVENT = "release"  # `krnet node release|prune` freed the id
_RUNNER_FIELDS = tuple(field.name for field in fields(RunnerRecord))


def to_record(row: RunnerRow) -> RunnerRecord:
    """A row as the record the rest of krnet reads: every field, times as aware UTC."""
    values = {name: getattr(row, name) for name in _RUNNER_FIELDS}
    values["first_seen"] = row.first_seen.astimezone(timezone.utc)
    values["last_seen"] = row.last_seen.astimezone(timezone.utc)
    values["observed"] = dict(row.observed or {})
    return RunnerRecord(**values)


def to_row(record: RunnerRecord, row: RunnerRow | None = None) -> RunnerRow:
    """`record` written field by field into `row`, or into a new row."""
    values = {name: getattr(record, name) for name in _RUNNER_FIELDS}
    values["observed"] = dict(record.observed)
    if row is None:
        return RunnerRow(**values)
    for name, value in values.items():
        setattr(row, name, value)
    return row


def to_event(row: EventRow) -> EventRecord:
    """An event row as the value readers get, its time as aware UTC."""
    time = row.time.astimezone(timezone.utc)
    return EventRecord(row.id or 0, time, row.kind, row.runner_id, row.message)


def joined_record(
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


def change_status(
    session: Session, row: RunnerRow, status: str, reason: str, now: datetime
) -> None:
    """Set a runner's status, with an event when it changes."""
    if row.status != status:
        row.status = status
        session.add(row)
        log_event(
            session, now, status, f"runner {row.runner_id} ({row.hostname}) {reason}", row.runner_id
        )


def log_event(
    session: Session, now: datetime, kind: str, message: str, runner_id: int | None
) -> None:
    """One event in the same transaction as the write it tells of."""
    session.add(EventRow(time=now, kind=kind, runner_id=runner_id, message=message))
