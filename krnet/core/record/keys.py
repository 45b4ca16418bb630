"""Runner keys: the per-runner credential the host issued at enrolment, looked up by identity,
and the retired keys of runners whose record went (docs/protocol.md, "Enrolment" step 5)."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, delete, select

from krnet.core.model.records import identity_hash
from krnet.core.record.base import StoreBase
from krnet.core.record.tables import RetiredKeyRow, RunnerRow

RETIRED_KEPT = 1024  # the most recent retired keys the record keeps: a bound on what churn adds


class RunnerKeys(StoreBase):
    """The host's reads of runner credentials (a part of `Store`)."""

    def credentials(self, identity: str) -> tuple[int, str] | None:
        """The id and per-runner key of the enrolled runner with this identity, or None."""
        with self._session() as session:
            row = session.exec(
                select(RunnerRow).where(RunnerRow.identity_hash == identity_hash(identity))
            ).first()
            if row is None or row.runner_key is None:
                return None
            return row.runner_id, row.runner_key

    def retired_key(self, identity: str) -> str | None:
        """The key of a runner with this identity whose record went, or None: its host still
        answers it with that key (and enrols it afresh)."""
        with self._session() as session:
            row = session.get(RetiredKeyRow, identity_hash(identity))
            return None if row is None else row.runner_key


def retire(session: Session, row: RunnerRow, now: datetime) -> None:
    """Keep the key of an enrolled runner whose record is going (reclaimed, released, left)."""
    if row.identity_hash is None or row.runner_key is None:
        return
    session.merge(
        RetiredKeyRow(identity_hash=row.identity_hash, runner_key=row.runner_key, retired_at=now)
    )
    session.flush()
    kept = select(RetiredKeyRow.identity_hash).order_by(col(RetiredKeyRow.retired_at).desc())
    session.exec(
        delete(RetiredKeyRow).where(
            col(RetiredKeyRow.identity_hash).not_in(kept.limit(RETIRED_KEPT).scalar_subquery())
        )
    )


def forget_retired(session: Session, hashed_identity: str) -> None:
    """Drop a runner's retired key once it has proved the key that replaced it."""
    retired = session.get(RetiredKeyRow, hashed_identity)
    if retired is not None:
        session.delete(retired)
