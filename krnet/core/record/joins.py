"""Allocation: a batch of joins decided in one record transaction (group commit), each join by
indexed queries; the store's part that gives runner ids.

The allocator policy (`krnet.core.model.allocator.decide`) sees, per join, only the records it
can return to, the lowest free id and (when none is free) the inactive record to reclaim:
three indexed queries instead of a load of every record, so a join costs the same at 10
runners as at 4,095. The joins of a batch are decided in order, each seeing those before it,
and committed together: a crash before the commit gives no id, after it every id is recorded
before any runner hears of it (heavy: imported only with `krnet.core.record.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from sqlalchemy import ColumnElement, text
from sqlmodel import Session, and_, col, or_, select

from krnet.core.model.allocator import decide
from krnet.core.model.plan import OverlayPlan
from krnet.core.model.records import (
    INACTIVE,
    AllocationDecision,
    JoinRequest,
    RunnerRecord,
    identity_hash,
)
from krnet.core.record.base import StoreBase
from krnet.core.record.keys import forget_retired, retire
from krnet.core.record.rows import JOIN_EVENTS, joined_record, log_event, to_record, to_row
from krnet.core.record.tables import RunnerRow
from krnet.errors import AlreadyEnrolledError, PoolExhaustedError


@dataclass(frozen=True)
class BatchedJoin:
    """One join of a batch: what the runner said, and what its session already knows."""

    request: JoinRequest
    proven: int | None = None  # the id whose key the join proved (it keeps its key)
    runner_key: str | None = None  # the key an enrolment is issued
    note: str | None = None  # an `address` event, recorded under the id it gets


Admitted: TypeAlias = tuple[AllocationDecision, RunnerRecord]
Refusal: TypeAlias = PoolExhaustedError | AlreadyEnrolledError
Outcome: TypeAlias = Admitted | Refusal

# the lowest id in 1..:top no row holds: 1, or the id after a held one
_LOWEST_FREE = text(
    "SELECT min(free) FROM ("
    " SELECT 1 AS free WHERE :top >= 1 AND NOT EXISTS (SELECT 1 FROM runner WHERE runner_id = 1)"
    " UNION ALL SELECT held.runner_id + 1 FROM runner AS held"
    " WHERE held.runner_id >= 1 AND held.runner_id < :top AND NOT EXISTS"
    " (SELECT 1 FROM runner AS next WHERE next.runner_id = held.runner_id + 1))"
)


class Allocations(StoreBase):
    """The part of the store that gives joining runners their ids."""

    def allocate_joins(
        self, joins: Sequence[BatchedJoin], *, plan: OverlayPlan, now: datetime
    ) -> list[Outcome]:
        """Decide and record each join in order, all in one transaction: an outcome per join
        (a refusal is its outcome, recorded as a `refused` event)."""
        with self._session(write=True) as session:
            return [_allocate(session, join, plan, now) for join in joins]

    def allocate(
        self,
        request: JoinRequest,
        *,
        plan: OverlayPlan,
        now: datetime,
        proven: int | None = None,
        runner_key: str | None = None,
    ) -> Admitted:
        """One join alone (`allocate_joins` of one); raises its refusal.

        `proven`: the id whose key the join proved (it keeps its key). Otherwise the join is an
        enrolment and `runner_key` the key the host issues it (docs/protocol.md, "Enrolment").
        """
        join = BatchedJoin(request, proven=proven, runner_key=runner_key)
        (outcome,) = self.allocate_joins([join], plan=plan, now=now)
        if isinstance(outcome, (PoolExhaustedError, AlreadyEnrolledError)):
            raise outcome
        return outcome


def _allocate(session: Session, join: BatchedJoin, plan: OverlayPlan, now: datetime) -> Outcome:
    request = join.request
    try:
        decision = _decide(session, join, plan.max_runners)
    except (PoolExhaustedError, AlreadyEnrolledError) as refusal:
        code = "pool_exhausted" if isinstance(refusal, PoolExhaustedError) else "already_enrolled"
        who = f"{request.hostname} ({request.physical_ip})"
        log_event(session, now, "refused", f"{who}: {code}", None)
        return refusal
    addresses = plan.runner(decision.runner_id)
    row = session.get(RunnerRow, decision.runner_id)
    if row is not None and decision.kind == "reclaimed":
        retire(session, row, now)  # its runner is answered with it when it comes back
    first_seen = row.first_seen if row is not None and decision.kind == "returning" else now
    joined = joined_record(
        decision.runner_id,
        request,
        vni=addresses.vni,
        subnet=str(addresses.subnet),
        first_seen=first_seen,
        now=now,
    )
    row = to_row(joined, row)
    if decision.runner_id != join.proven:
        row.runner_key = join.runner_key
    elif row.identity_hash is not None:
        forget_retired(session, row.identity_hash)  # its new key is proven: the old one goes
    session.add(row)
    log_event(session, now, JOIN_EVENTS[decision.kind], _join_message(decision, row), row.runner_id)
    if join.note is not None:
        log_event(session, now, "address", join.note, row.runner_id)
    session.flush()
    return decision, to_record(row)


def _decide(session: Session, join: BatchedJoin, max_runners: int) -> AllocationDecision:
    """The policy over the three indexed answers (the reclaim query only when no id is free)."""
    free = session.execute(_LOWEST_FREE, {"top": max_runners}).scalar()
    oldest = None if free is not None else _oldest_inactive(session, max_runners)
    return decide(
        _candidates(session, join),
        join.request,
        max_runners,
        proven=join.proven,
        free=free,
        oldest_inactive=oldest,
    )


def _candidates(session: Session, join: BatchedJoin) -> list[RunnerRecord]:
    """The records this join may return to: its proven id, its hostname or identity, or its
    address among inactive records without a key (the only ones `find_returning` matches by
    address: many active runners may claim one address, e.g. all on one test host)."""
    request = join.request
    matches: list[ColumnElement[bool] | bool] = [
        RunnerRow.hostname == request.hostname,
        RunnerRow.identity_hash == identity_hash(request.identity),
        and_(
            RunnerRow.physical_ip == request.physical_ip,
            col(RunnerRow.identity_hash).is_(None),
            RunnerRow.status == INACTIVE,
        ),
    ]
    if join.proven is not None:
        matches.append(RunnerRow.runner_id == join.proven)
    rows = session.exec(select(RunnerRow).where(or_(*matches))).all()
    return [to_record(row) for row in rows]


def _oldest_inactive(session: Session, max_runners: int) -> RunnerRecord | None:
    """The inactive record of the pool seen least recently (ties: the lowest id)."""
    row = session.exec(
        select(RunnerRow)
        .where(RunnerRow.status == INACTIVE, col(RunnerRow.runner_id).between(1, max_runners))
        .order_by(col(RunnerRow.last_seen), col(RunnerRow.runner_id))
        .limit(1)
    ).first()
    return None if row is None else to_record(row)


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
