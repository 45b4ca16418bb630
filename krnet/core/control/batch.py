"""Joins that arrive together are decided together (group commit), one batcher per host.

A batch is every join queued while the previous batch was being served; a lone join is served
at once (nothing waits for company). Each batch is one record transaction (every id decided
by the allocator policy and committed before any runner hears of it) and one data-plane call
for all its tunnels. Each runner gets its answer once its own tunnel exists; a tunnel the
kernel refuses refuses only its runner (a failure every tunnel shares, such as the firewall,
refuses the batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from krnet.core.control.counters import COUNTERS
from krnet.core.model.plan import tunnel_name
from krnet.core.record.joins import BatchedJoin, Outcome, Refusal
from krnet.errors import ErrorCode, KrnetError, PoolExhaustedError, ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.context import HostContext
    from krnet.core.model.records import AllocationDecision, RunnerRecord
    from krnet.core.protocol.messages import Allocation

log = logging.getLogger("krnet.host")

Tunnels = Sequence[tuple["RunnerRecord", "Allocation"]]


@dataclass(frozen=True)
class Admission:
    """A join that got its id and its tunnel: what its session welcomes the runner with."""

    decision: AllocationDecision
    runner: RunnerRecord
    allocation: Allocation


@dataclass
class _Waiting:
    """A queued join and the session awaiting its answer."""

    join: BatchedJoin
    host_ip: str
    answer: asyncio.Future[Admission] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def refuse(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)


def refusal_code(refusal: Refusal) -> ErrorCode:
    """The wire code of a join the allocator policy refused."""
    return "pool_exhausted" if isinstance(refusal, PoolExhaustedError) else "already_enrolled"


class JoinBatcher:
    """Queues joins and serves them in batches, one batch at a time."""

    def __init__(self, context: HostContext) -> None:
        self.context = context
        self._queue: list[_Waiting] = []
        self._serving: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Joins waiting for the next batch (the current one is being served)."""
        return len(self._queue)

    async def admit(self, join: BatchedJoin, host_ip: str) -> Admission:
        """An id and a tunnel for `join`; ProtocolError (its wire code) when it is refused."""
        waiting = _Waiting(join, host_ip)
        self._queue.append(waiting)
        if self._serving is None:
            self._serving = asyncio.create_task(self._serve(), name="krnet-joins")
        return await waiting.answer

    async def close(self) -> None:
        """Stop serving (the host is stopping): queued joins are dropped with their sessions."""
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving

    async def _serve(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._serve_batch(batch)
                except Exception as exc:  # the record failed: every join of the batch says so
                    for waiting in batch:
                        waiting.refuse(exc)
        finally:
            self._serving = None

    async def _serve_batch(self, batch: list[_Waiting]) -> None:
        context = self.context
        record = context.record
        outcomes: list[Outcome] = await record.run(
            record.store.allocate_joins,
            [waiting.join for waiting in batch],
            plan=context.plan,
            now=context.clock(),
        )
        admitted: list[tuple[_Waiting, Admission]] = []
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, KrnetError):
                waiting.refuse(ProtocolError(refusal_code(outcome), str(outcome)))
                continue
            decision, runner = outcome
            allocation = context.allocation(runner, waiting.host_ip)
            admitted.append((waiting, Admission(decision, runner, allocation)))
        tunnels = [(admission.runner, admission.allocation) for _, admission in admitted]
        if len(batch) > 1:
            log.info("%d joins decided together: %d ids given", len(batch), len(tunnels))
        failed = await asyncio.to_thread(self._build, tunnels)
        if tunnels:  # direct mode: every runner learns the batch at once (one read of the record)
            await context.refresh_peers()
        for waiting, admission in admitted:
            error = failed.get(admission.runner.runner_id)
            if error is None:
                if not waiting.answer.done():
                    waiting.answer.set_result(admission)
                continue
            name = tunnel_name(admission.runner.runner_id)
            COUNTERS.dataplane_failed()
            await record.event("tunnel_failed", f"{name}: {error}")
            waiting.refuse(ProtocolError("internal", f"the host could not build {name}: {error}"))

    def _build(self, tunnels: Tunnels) -> Mapping[int, KrnetError]:
        """Every tunnel of the batch in one data-plane call (runs in a thread): the runners
        whose tunnel the kernel refused, by id; a failure the batch shares is every runner's."""
        if not tunnels:
            return {}
        try:
            return self.context.dataplane.runners_up(tunnels)
        except KrnetError as exc:
            return {runner.runner_id: exc for runner, _ in tunnels}
