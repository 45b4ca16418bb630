"""Heartbeats that report nothing new write only their time, for all runners together, and
runner_timeout judges runners exactly as before: by the last heartbeat heard."""

from __future__ import annotations

from typing import Any

import pytest

from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.messages import HeartbeatAck, applied_of
from krnet.core.record.store import Store
from tests.protocol.peers import RunningHost, StartHost, join, wait_until
from tests.protocol.test_scale_join import Clock

OBSERVED = {"mtu": 1450}


async def beat(
    connection: HostConnection, observed: dict[str, Any] = OBSERVED, applied: Any = None
) -> HeartbeatAck:
    await connection.send({"type": "heartbeat", "applied": applied, "observed": observed})
    ack = await connection.receive(HeartbeatAck)
    assert isinstance(ack, HeartbeatAck)
    return ack


def full_writes(host: RunningHost, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The runner ids of every heartbeat written in full from now on."""
    written: list[int] = []
    heartbeat = host.store.heartbeat

    def counted(runner_id: int, **fields: Any) -> Any:
        written.append(runner_id)
        return heartbeat(runner_id, **fields)

    monkeypatch.setattr(host.store, "heartbeat", counted)
    return written


async def test_a_heartbeat_with_nothing_new_writes_only_its_time(
    start_host: StartHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    host = await start_host(clock=clock)
    written = full_writes(host, monkeypatch)
    connection, _ = await join(host.port)
    events = len(host.store.events())
    await beat(connection)  # news: what it observes
    for _ in range(3):
        clock.advance(5)
        await beat(connection)
    await beat(connection, {"mtu": 1400})  # news again
    clock.advance(5)
    await beat(connection, {"mtu": 1400})
    assert written == [1, 1]
    await wait_until(lambda: host.store.runner(1).last_seen == clock.now)  # type: ignore[union-attr]
    assert len(host.store.events()) == events  # last-seen times are no events
    await connection.close()


async def test_a_first_heartbeat_adding_only_the_allocation_sent_writes_only_its_time(
    start_host: StartHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    host = await start_host(clock=clock)
    written = full_writes(host, monkeypatch)
    connection, allocation = await join(host.port)
    applied = applied_of(allocation).model_dump()
    acks = []
    for _ in range(3):  # as the agent and bench/simrunner.py: the welcome's allocation applied
        clock.advance(5)
        acks.append(await beat(connection, {}, applied))
    assert written == []
    assert all(ack.allocation() == allocation for ack in acks)  # the same ack, resigned
    assert [ack.seq for ack in acks] == sorted({ack.seq for ack in acks})
    await wait_until(lambda: host.store.runner(1).last_seen == clock.now)  # type: ignore[union-attr]
    assert host.store.runner(1).observed == {"applied": applied}  # type: ignore[union-attr]
    other = dict(applied, mtu=1400)  # an `applied` the host did not send is news
    await beat(connection, {}, other)
    assert written == [1]
    await connection.close()


async def test_runner_timeout_still_judges_by_the_last_heartbeat(start_host: StartHost) -> None:
    clock = Clock()
    # the session's own idle limit (3 heartbeat intervals) must outlast the test's waiting
    host = await start_host(clock=clock, runner_timeout=30.0, heartbeat_interval=10.0)
    connection, _ = await join(host.port)
    await beat(connection)
    for _ in range(6):  # 60 s of heartbeats, each with nothing new: active throughout
        clock.advance(10)
        await beat(connection)
    await wait_until(lambda: host.store.runner(1).last_seen == clock.now)  # type: ignore[union-attr]
    assert host.store.runner(1).status == "active"  # type: ignore[union-attr]
    clock.advance(31)  # silent for longer than runner_timeout
    await wait_until(lambda: host.store.runner(1).status == "inactive")  # type: ignore[union-attr]
    await beat(connection)  # heard again: written in full, active again with its event
    assert host.store.runner(1).status == "active"  # type: ignore[union-attr]
    assert host.store.events(limit=1)[0].message.endswith("is heard from again")
    await connection.close()


async def test_a_stopping_host_writes_the_times_it_kept(start_host: StartHost) -> None:
    clock = Clock()
    host = await start_host(clock=clock, runner_timeout=3600.0)  # the timer would wait long
    connection, _ = await join(host.port)
    await beat(connection)
    clock.advance(5)
    await beat(connection)
    await host.service.stop()
    await connection.close()
    with Store.open(host.data_dir) as reopened:
        assert reopened.runner(1).last_seen == clock.now  # type: ignore[union-attr]
