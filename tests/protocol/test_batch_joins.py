"""Joins that arrive together are decided together: one record transaction and one data-plane
call per batch, each runner welcomed after its own tunnel, a failing tunnel refusing only its
runner, and a lone join served at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from krnet.core.control.planes import NullHostDataPlane
from krnet.core.model.records import RunnerRecord
from krnet.core.protocol.messages import Allocation
from krnet.errors import KernelError, KrnetError, ProtocolError
from tests.protocol.peers import RunningHost, StartHost, join_once, wait_until

WAIT = 30.0  # a generous bound on the test's own waiting, never a measured figure


@dataclass
class GatedPlane(NullHostDataPlane):
    """The null plane, with each data-plane call noted as the batch of runner ids it builds,
    held while `gate` is clear, and refusing the tunnels of the ids in `refuse`."""

    batches: list[list[int]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    refuse: set[int] = field(default_factory=set)

    def runners_up(
        self, batch: Sequence[tuple[RunnerRecord, Allocation]]
    ) -> Mapping[int, KrnetError]:
        self.batches.append([runner.runner_id for runner, _ in batch])
        assert self.gate.wait(WAIT)
        refused: dict[int, KrnetError] = {
            runner.runner_id: KernelError(f"vxkr{runner.runner_id}: the kernel said no")
            for runner, _ in batch
            if runner.runner_id in self.refuse
        }
        super().runners_up([(r, a) for r, a in batch if r.runner_id not in refused])
        return refused

    def built(self) -> list[int]:
        return [call[1].runner_id for call in self.calls if call[0] == "runner_up"]  # type: ignore[attr-defined]


async def held_first_join(host: RunningHost, plane: GatedPlane) -> asyncio.Task[Allocation]:
    """A first join, held in the data plane: what joins after it queue behind."""
    first = asyncio.create_task(join_once(host.port, hostname="first"))
    await wait_until(lambda: plane.batches == [[1]], WAIT)
    return first


async def test_joins_queued_behind_a_batch_are_decided_together(start_host: StartHost) -> None:
    plane = GatedPlane()
    host = await start_host(dataplane=plane)
    first = await held_first_join(host, plane)
    queued = [asyncio.create_task(join_once(host.port, hostname=f"r{i}")) for i in range(20)]
    await wait_until(lambda: host.service.joins.queued == 20, WAIT)
    plane.gate.set()
    allocations = [await first, *await asyncio.gather(*queued)]
    assert sorted(a.runner_id for a in allocations) == list(range(1, 22))
    assert plane.batches == [[1], list(range(2, 22))]  # one data-plane call for the 20
    assert sorted(plane.built()) == list(range(1, 22))


async def test_each_runner_is_welcomed_only_after_its_tunnel_exists(
    start_host: StartHost,
) -> None:
    plane = GatedPlane()
    host = await start_host(dataplane=plane)
    first = await held_first_join(host, plane)
    await asyncio.sleep(0.2)  # time for a welcome that does not wait (none must come)
    assert not first.done() and plane.built() == []
    plane.gate.set()
    assert (await first).runner_id == 1 and plane.built() == [1]


async def test_a_failing_tunnel_refuses_only_its_runner(start_host: StartHost) -> None:
    plane = GatedPlane(refuse={4})
    host = await start_host(dataplane=plane)
    first = await held_first_join(host, plane)
    queued = [asyncio.create_task(join_once(host.port, hostname=f"r{i}")) for i in range(5)]
    await wait_until(lambda: host.service.joins.queued == 5, WAIT)
    plane.gate.set()
    outcomes = [await first, *await asyncio.gather(*queued, return_exceptions=True)]
    refused = [o for o in outcomes if isinstance(o, ProtocolError)]
    assert len(refused) == 1 and refused[0].code == "internal"
    assert "vxkr4" in str(refused[0])
    welcomed = sorted(o.runner_id for o in outcomes if isinstance(o, Allocation))
    assert welcomed == [1, 2, 3, 5, 6]
    assert sorted(plane.built()) == [1, 2, 3, 5, 6]
    failed = [e for e in host.store.events() if e.kind == "tunnel_failed"]
    assert [e.message.split(":")[0] for e in failed] == ["vxkr4"]


async def test_a_lone_join_is_a_batch_of_its_own_and_waits_for_no_other(
    start_host: StartHost,
) -> None:
    plane = GatedPlane()
    plane.gate.set()
    lone = await start_host(dataplane=plane)
    for index in range(3):
        allocation = await join_once(lone.port, hostname=f"alone-{index}")
        assert allocation.runner_id == index + 1
    assert plane.batches == [[1], [2], [3]]


async def test_many_joins_at_once_each_get_one_id_and_one_join_event(
    start_host: StartHost,
) -> None:
    count = 64
    host = await start_host()
    allocations = await asyncio.gather(
        *(join_once(host.port, hostname=f"runner-{i}") for i in range(count))
    )
    assert sorted(a.runner_id for a in allocations) == list(range(1, count + 1))
    joins = [e for e in host.store.events() if e.kind == "join"]
    assert sorted(e.runner_id or 0 for e in joins) == list(range(1, count + 1))
