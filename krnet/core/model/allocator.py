"""The runner id policy of the reference, as a pure function over the current record."""

from __future__ import annotations

from collections.abc import Sequence

from krnet.core.model.records import INACTIVE, AllocationDecision, JoinRequest, RunnerRecord
from krnet.errors import PoolExhaustedError


def choose_runner_id(
    records: Sequence[RunnerRecord], request: JoinRequest, max_runners: int
) -> AllocationDecision:
    """Decide which id a joining runner gets.

    1. A returning runner keeps its id (see `find_returning` for the matching rule).
    2. Otherwise the lowest id in 1..max_runners that no record holds ("new"), so ids are
       handed out in order on first registration.
    3. Otherwise, only when every id is held, the inactive record seen least recently is
       reclaimed (ties: the lowest id).
    4. Otherwise PoolExhaustedError.

    Records whose id lies outside 1..max_runners (left over from a wider plan) take no part.
    """
    pool = [record for record in records if 1 <= record.runner_id <= max_runners]
    returning = find_returning(pool, request)
    if returning is not None:
        return AllocationDecision(returning.runner_id, "returning", returning)
    held = {record.runner_id for record in pool}
    free = next((i for i in range(1, max_runners + 1) if i not in held), None)
    if free is not None:
        return AllocationDecision(free, "new", None)
    inactive = [record for record in pool if record.status == INACTIVE]
    if inactive:
        victim = min(inactive, key=lambda record: (record.last_seen, record.runner_id))
        return AllocationDecision(victim.runner_id, "reclaimed", victim)
    raise PoolExhaustedError(
        f"all {max_runners} runner ids are held by active runners, so {request.hostname} "
        f"({request.physical_ip}) cannot join: stop a runner you no longer need (its id is "
        "reclaimed once it has been silent for runner_timeout) and retry"
    )


def find_returning(records: Sequence[RunnerRecord], request: JoinRequest) -> RunnerRecord | None:
    """The record a joining runner already owns, or None.

    Matching rule, first hit wins:
    1. request and record carry the same identity;
    2. same hostname, among records WITHOUT an identity;
    3. same physical address, among records without an identity that are inactive.

    A record that carries an identity belongs to that identity alone: another machine with the
    same hostname or address (or one that sends no identity) never takes its id. A request
    with an identity may claim an identity-less record by hostname or address (a runner
    upgraded to send one); the store then writes the identity into it. The address step skips
    active records because a live runner under another name (e.g. behind the same NAT) holds
    them. Among several hits the most recently seen wins (ties: the lowest id).
    """
    if request.identity is not None:
        for record in records:
            if record.identity == request.identity:
                return record
    anonymous = [record for record in records if record.identity is None]
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
