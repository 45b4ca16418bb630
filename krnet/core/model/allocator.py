"""The runner id policy of the reference, as a pure function over the current record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from krnet.core.model.records import (
    ACTIVE,
    INACTIVE,
    AllocationDecision,
    AllocationKind,
    JoinRequest,
    RunnerRecord,
    identity_hash,
)
from krnet.errors import AlreadyEnrolledError, PoolExhaustedError


def choose_runner_id(
    records: Sequence[RunnerRecord],
    request: JoinRequest,
    max_runners: int,
    *,
    proven: int | None = None,
) -> AllocationDecision:
    """Decide which id a joining runner gets.

    `proven` is the id whose per-runner key the join's MAC proved (docs/protocol.md,
    "Enrolment"); None for an enrolment, a join authenticated by the cluster token alone.

    1. A runner that proved its key keeps its id; an enrolling runner may take an existing
       record only as `find_returning` allows.
    2. Otherwise the lowest id in 1..max_runners that no record holds ("new"), so ids are
       handed out in order on first registration.
    3. Otherwise, only when every id is held, the inactive record seen least recently is
       reclaimed (ties: the lowest id).
    4. Otherwise PoolExhaustedError.

    Records whose id lies outside 1..max_runners (left over from a wider plan) take no part.
    """
    pool = in_pool(records, max_runners)
    held = {record.runner_id for record in pool}
    free = next((i for i in range(1, max_runners + 1) if i not in held), None)
    inactive = [record for record in pool if record.status == INACTIVE]
    oldest = min(inactive, key=reclaim_order, default=None)
    return decide(pool, request, max_runners, proven=proven, free=free, oldest_inactive=oldest)


def decide(
    candidates: Sequence[RunnerRecord],
    request: JoinRequest,
    max_runners: int,
    *,
    proven: int | None,
    free: int | None,
    oldest_inactive: RunnerRecord | None,
) -> AllocationDecision:
    """`choose_runner_id` over what an indexed record answers: the pool's records a join may
    return to (its proven id, or its hostname, identity hash or address; no other record can
    match), the lowest free id, and (needed only when none is free) the inactive record
    first in `reclaim_order`."""
    pool = in_pool(candidates, max_runners)
    returning = next((record for record in pool if record.runner_id == proven), None)
    if returning is None:
        returning = find_returning(pool, request)
    if returning is not None:
        enrolled = returning.identity_hash is not None and returning.runner_id != proven
        kind: AllocationKind = "reenrolled" if enrolled else "returning"
        return AllocationDecision(returning.runner_id, kind, returning)
    if free is not None:
        return AllocationDecision(free, "new", None)
    if oldest_inactive is not None:
        return AllocationDecision(oldest_inactive.runner_id, "reclaimed", oldest_inactive)
    raise PoolExhaustedError(
        f"all {max_runners} runner ids are held by active runners, so {request.hostname} "
        f"({request.physical_ip}) cannot join: stop a runner you no longer need (its id is "
        "reclaimed once it has been silent for runner_timeout) and retry"
    )


def in_pool(records: Sequence[RunnerRecord], max_runners: int) -> list[RunnerRecord]:
    """Records whose id lies in 1..max_runners (others are left over from a wider plan)."""
    return [record for record in records if 1 <= record.runner_id <= max_runners]


def reclaim_order(record: RunnerRecord) -> tuple[datetime, int]:
    """Which inactive record is reclaimed first: the one seen least recently, then the lowest id."""
    return record.last_seen, record.runner_id


def find_returning(records: Sequence[RunnerRecord], request: JoinRequest) -> RunnerRecord | None:
    """The record an enrolling runner (one that proved no per-runner key) may take, or None.

    An enrolled record (one with an identity hash and a key) is never matched by identity:
    the identity travels in clear, only the key proves it. Matching rule, first hit wins:
    1. an enrolled record of the same hostname (or identity), only while it is inactive: a
       reinstalled runner that lost its key is re-enrolled on its old id. While it is active
       the join is refused (AlreadyEnrolledError): another machine holds that runner's key.
       Except for the same identity while the key is unused (no heartbeat, no join with it
       since the enrolment): that runner never got its welcome (a crash, a cut), and only
       someone who saw its join on the wire knows the identity, who saw the key too;
    2. same hostname, among records that are not enrolled (adopted from the kernel);
    3. same physical address, among records not enrolled that are inactive.

    The address step skips active records because a live runner under another name (e.g.
    behind the same NAT) holds them. Among several hits the most recently seen wins (ties:
    the lowest id).
    """
    claimed = identity_hash(request.identity)
    enrolled = [
        record
        for record in records
        if record.identity_hash is not None
        and (record.hostname == request.hostname or record.identity_hash == claimed)
    ]
    for record in enrolled:
        if record.status == ACTIVE and not (record.identity_hash == claimed and _unused(record)):
            raise AlreadyEnrolledError(
                f"{record.hostname} is enrolled as runner {record.runner_id}, which is active "
                f"(last seen {record.last_seen.isoformat()}): only the machine holding its runner "
                "key can join under that hostname. If this machine is a reinstall of it, stop "
                "krnet on the old one (or wait runner_timeout after it went away) and this join "
                "re-enrols it; otherwise give this machine another hostname"
            )
    if enrolled:
        return max(enrolled, key=lambda record: (record.last_seen, -record.runner_id))
    anonymous = [record for record in records if record.identity_hash is None]
    by_hostname = [record for record in anonymous if record.hostname == request.hostname]
    by_address = [
        record
        for record in anonymous
        if record.physical_ip == request.physical_ip and record.status == INACTIVE
    ]
    for matches in (by_hostname, by_address):
        if matches:
            return max(matches, key=lambda record: (record.last_seen, -record.runner_id))
    return None


def _unused(record: RunnerRecord) -> bool:
    """No heartbeat and no join proved the key since the enrolment that wrote this record."""
    return not record.observed and record.last_seen == record.first_seen
