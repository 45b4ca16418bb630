"""A full pool: 255 runners joining at once, the 256th refused, then reclaiming the oldest."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from krnet.errors import ProtocolError
from tests.protocol.peers import RunningHost, StartHost, join_once, wait_until


class Clock:
    """The host's idea of now, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 1, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def refused_code(host: RunningHost, hostname: str) -> str:
    with pytest.raises(ProtocolError) as caught:
        await join_once(host.port, hostname=hostname)
    return caught.value.code


async def test_full_pool_then_least_recently_seen_is_reclaimed(start_host: StartHost) -> None:
    clock = Clock()
    host = await start_host(clock=clock, runner_timeout=30.0)
    identities = [uuid.uuid4().hex for _ in range(255)]
    allocations = await asyncio.gather(
        *(
            join_once(host.port, identity=identity, hostname=f"runner-{index}")
            for index, identity in enumerate(identities)
        )
    )
    ids = sorted(allocation.runner_id for allocation in allocations)
    assert ids == list(range(1, 256))
    owner = {
        allocation.runner_id: identity
        for allocation, identity in zip(allocations, identities, strict=True)
    }

    before = host.store.runners()
    assert await refused_code(host, "one-too-many") == "pool_exhausted"
    assert host.store.runners() == before

    # runners 1, 2, 4, 5 are seen again at +10 s, 6..255 at +20 s; runner 3 only at the start
    clock.advance(10)
    for runner_id in (1, 2, 4, 5):
        await join_once(host.port, identity=owner[runner_id], hostname="again")
    clock.advance(10)
    await asyncio.gather(
        *(join_once(host.port, identity=owner[i], hostname="again") for i in range(6, 256))
    )
    clock.advance(25)  # +45 s: 1..5 silent for over runner_timeout (30 s), 6..255 for 25 s
    await wait_until(lambda: sum(r.status == "inactive" for r in host.store.runners()) == 5)

    newcomer = await join_once(host.port, hostname="newcomer")
    assert newcomer.runner_id == 3  # the least recently seen inactive id
    second = await join_once(host.port, hostname="second-newcomer")
    assert second.runner_id == 1  # 1, 2, 4, 5 tie on last seen: the lowest id
    records = {record.runner_id: record for record in host.store.runners()}
    assert (records[3].hostname, records[1].hostname) == ("newcomer", "second-newcomer")
    assert len(records) == 255
