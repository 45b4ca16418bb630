"""Freeing runner ids: a runner's `leave`, `krnet node release|prune`, and the ids released
by hand whose tunnels the host must not adopt back."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import col, func, select

from krnet.core.model.records import RunnerRecord
from krnet.core.record.base import StoreBase
from krnet.core.record.keys import retire
from krnet.core.record.rows import JOIN_EVENTS, RELEASE_EVENT, log_event, to_record
from krnet.core.record.tables import EventRow, RunnerRow


class Releases(StoreBase):
    """The writes and the query that free an id (a part of `Store`)."""

    def release(self, runner_id: int) -> RunnerRecord | None:
        """Delete the record of a runner that left, freeing its id; the record, or None."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner_id)
            if row is None:
                return None
            record = to_record(row)
            now = datetime.now(timezone.utc)
            retire(session, row, now)  # it comes back as a new runner, answered with its key
            session.delete(row)
            message = f"runner {runner_id} ({row.hostname}) left; id {runner_id} is free"
            log_event(session, now, "leave", message, runner_id)
            return record

    def release_by_hand(
        self, runner: RunnerRecord, *, force: bool, now: datetime, why: str
    ) -> RunnerRecord | None:
        """Delete `runner`'s record for `krnet node release|prune`, with one `release` event,
        if it is still that runner and (unless `force`) not heard from since; None else."""
        with self._session(write=True) as session:
            row = session.get(RunnerRow, runner.runner_id)
            if row is None:
                return None
            current = to_record(row)
            if (current.identity_hash, current.first_seen) != (
                runner.identity_hash,
                runner.first_seen,
            ):
                return None
            if not force and current.last_seen != runner.last_seen:
                return None
            retire(session, row, now)
            session.delete(row)
            who = f"runner {current.runner_id} ({current.hostname}, {current.physical_ip})"
            message = f"{who} released by hand ({why}); id {current.runner_id} is free"
            log_event(session, now, RELEASE_EVENT, message, current.runner_id)
            return current

    def released_ids(self) -> list[int]:
        """Ids released by hand and not held since: their latest join, adopt or release event
        is a release and no record holds them (their tunnels must not be adopted back)."""
        lifecycle = [RELEASE_EVENT, "leave", "adopt", *JOIN_EVENTS.values()]
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
