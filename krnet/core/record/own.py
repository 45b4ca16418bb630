"""A runner's record of itself: the one id its host gave it, kept or forgotten."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import select

from krnet.core.model.records import JoinRequest, RunnerRecord
from krnet.core.record.base import StoreBase
from krnet.core.record.rows import joined_record, log_event, to_record, to_row
from krnet.core.record.tables import RunnerRow


class OwnAllocation(StoreBase):
    """The runner side's writes (a part of `Store`): its host's word is the whole record."""

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
                log_event(session, now, "join", message, runner_id)
            joined = joined_record(
                runner_id, request, vni=vni, subnet=subnet, first_seen=first_seen, now=now
            )
            row = to_row(joined, row)
            session.add(row)
            session.flush()
            return to_record(row)

    def forget_own_allocation(self, *, now: datetime, reason: str) -> list[int]:
        """A runner's record of itself once its host no longer gives it an id: emptied; the ids."""
        with self._session(write=True) as session:
            rows = list(session.exec(select(RunnerRow)))
            for row in rows:
                session.delete(row)
                log_event(
                    session, now, "lost", f"id {row.runner_id} is no longer ours: {reason}", None
                )
            return [row.runner_id for row in rows]
