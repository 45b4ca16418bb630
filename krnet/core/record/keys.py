"""Runner keys: the per-runner credential the host issued at enrolment, looked up by identity."""

from __future__ import annotations

from sqlmodel import select

from krnet.core.model.records import identity_hash
from krnet.core.record.base import StoreBase
from krnet.core.record.tables import RunnerRow


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
