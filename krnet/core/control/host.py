"""The host service: listens on the join port, one `JoinSession` per connection, and the timers.

The listener owns what outlives a connection: the connection cap (max_connections), the
liveness, reconcile and probe loops, and the store's thread. Each connection is a
`krnet.core.control.session.JoinSession`; the record (SQLite) and the data plane are blocking
and run in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from krnet.core.control.context import HostContext, StoreThread, utc_now
from krnet.core.control.counters import COUNTERS
from krnet.core.control.session import JoinSession
from krnet.core.model.records import ACTIVE
from krnet.core.protocol.framing import MAX_LINE
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.core.control.planes import HostDataPlane
    from krnet.core.model.settings import Settings
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.host")

MAX_BACKLOG = 4096  # pending connections the kernel may queue (it caps this at somaxconn)


class HostService:
    """The host side of the join protocol, bound to one listening socket."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        token: str,
        dataplane: HostDataPlane,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.context = HostContext(
            settings, settings.plan(), token, StoreThread(store), dataplane, clock
        )
        self._server: asyncio.Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The TCP port actually bound (join_port, or the kernel's pick for port 0)."""
        if self._server is None:
            raise RuntimeError("HostService.start() has not run")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Reconcile the data plane with the record, then listen and start the timers."""
        await self._reconcile()
        bind, port = self.settings.join_bind, self.settings.join_port
        try:
            self._server = await asyncio.start_server(
                self._accept,
                host=bind,
                port=port,
                limit=MAX_LINE,
                reuse_address=True,
                backlog=min(self.settings.max_connections, MAX_BACKLOG),
            )
        except OSError as exc:
            raise KrnetError(
                f"cannot listen on {bind}:{port} ({exc.strerror}): stop the process using it "
                "or set join_port / join_bind"
            ) from exc
        self._loops = [
            asyncio.create_task(self._sweep_forever(), name="krnet-liveness"),
            asyncio.create_task(self._reconcile_forever(), name="krnet-reconcile"),
            asyncio.create_task(self._probe_forever(), name="krnet-probe"),
        ]
        log.info("listening for runners on %s:%d", bind, self.port)

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop listening and drop connections; tunnels stay up (docs/design.md)."""
        if self._server is not None:
            self._server.close()
        tasks = [*self._loops, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.context.record.close()
        self._stopped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = JoinSession(self.context, reader, writer)
        if len(self._connections) >= self.settings.max_connections:
            log.warning(
                "refused %s: %d connections open (max_connections)",
                session.peer_ip,
                len(self._connections),
            )
            await session.refuse("busy", "the host has too many connections open; retry")
            await session.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await session.run()
        finally:
            self._connections.discard(task)

    # -- timers ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """Mark runners silent for runner_timeout inactive; their ids are kept."""
        timeout = self.settings.runner_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            cutoff = self.clock() - timedelta(seconds=timeout)
            try:
                ids = await self.context.record.run(self.store.mark_inactive, older_than=cutoff)
            except KrnetError as exc:
                log.error("liveness check failed: %s", exc)
                continue
            except Exception:  # a timer must outlive a bug in one pass
                log.exception("liveness check failed")
                continue
            for runner_id in ids:
                log.info("runner %d inactive: silent for %g s (runner_timeout)", runner_id, timeout)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            await self._reconcile()

    async def _probe_forever(self) -> None:
        """The continuous data-path probe: every probe_interval, through every active tunnel."""
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            try:
                runners = await self.context.record.run(self.store.runners)
                active = [runner.runner_id for runner in runners if runner.status == ACTIVE]
                await asyncio.to_thread(self.context.dataplane.probe, active)
            except KrnetError as exc:
                COUNTERS.dataplane_failed()
                log.error("probe failed: %s", exc)
            except Exception:  # the next round may succeed; the service keeps serving
                COUNTERS.dataplane_failed()
                log.exception("probe failed")

    async def _reconcile(self) -> None:
        try:
            runners = await self.context.record.run(self.store.runners)
            await asyncio.to_thread(self.context.dataplane.reconcile, runners)
            COUNTERS.reconciled()
        except KrnetError as exc:
            COUNTERS.dataplane_failed()
            log.error("reconcile failed: %s", exc)
        except Exception:  # the next pass may succeed; the service keeps serving
            COUNTERS.dataplane_failed()
            log.exception("reconcile failed")
