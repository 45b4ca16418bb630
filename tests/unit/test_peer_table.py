"""The host's peer table: one generation per change of who holds an id, pushed to waiters."""

from __future__ import annotations

import asyncio

from krnet.core.control.peers import PeerTable
from krnet.core.model.records import RunnerRecord, RunnerStatus
from tests.unit.test_status import runner as status_runner


def runner(runner_id: int, physical_ip: str, status: RunnerStatus = "active") -> RunnerRecord:
    return status_runner(runner_id, physical_ip=physical_ip, status=status)


def test_every_runner_holding_an_id_is_a_peer_active_or_not() -> None:
    table = PeerTable(direct=True)
    assert table.replace([runner(2, "192.0.2.12", "inactive"), runner(1, "192.0.2.11")])
    assert [(peer.runner_id, peer.physical_ip) for peer in table.peers] == [
        (1, "192.0.2.11"),
        (2, "192.0.2.12"),
    ]
    assert table.generation == 1


def test_only_a_change_makes_a_new_generation() -> None:
    table = PeerTable(direct=True)
    table.replace([runner(1, "192.0.2.11")])
    assert not table.replace([runner(1, "192.0.2.11", "inactive")])  # a status is no change
    assert table.replace([runner(1, "192.0.2.21")])  # an address change, or a reclaimed id
    assert table.replace([])  # it left, or was released
    assert (table.generation, table.peers) == (3, [])


def test_hub_mode_holds_and_pushes_nothing() -> None:
    table = PeerTable(direct=False)
    assert not table.replace([runner(1, "192.0.2.11")])
    assert (table.generation, table.peers) == (0, [])


def test_waiters_wake_on_a_newer_generation_and_changes_coalesce() -> None:
    async def scenario() -> list[int]:
        table = PeerTable(direct=True)
        table.replace([runner(1, "192.0.2.11")])
        waiter = asyncio.create_task(table.newer_than(1))
        await asyncio.sleep(0)
        assert not waiter.done()
        table.replace([runner(1, "192.0.2.11"), runner(2, "192.0.2.12")])
        table.replace([runner(2, "192.0.2.12")])
        return [await waiter, await table.newer_than(0)]

    assert asyncio.run(scenario()) == [3, 3]
