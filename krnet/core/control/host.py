"""The host service: listens on the join port, one `JoinSession` per connection, and the timers.

The listener owns what outlives a connection: the connection cap (max_connections), the
liveness, reconcile and probe loops, and the store's thread. Each connection is a
`krnet.core.control.session.JoinSession`; the record (SQLite) and the data plane are blocking
and run in threads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from krnet.core.control.batch import JoinBatcher
from krnet.core.control.context import HostContext, StoreThread, utc_now
from krnet.core.control.counters import COUNTERS
from krnet.core.control.session import CLOSE_TIMEOUT, JoinSession
from krnet.core.model.records import ACTIVE
from krnet.core.protocol.framing import MAX_LINE
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.core.control.planes import HostDataPlane
    from krnet.core.model.settings import Settings
    from krnet.core.record.store import Store

log = logging.getLogger("krnet.host")

MAX_BACKLOG = 4096  # pending connections the kernel may queue (it caps this at somaxconn)
SEND_BUFFER = 4 * MAX_LINE  # bytes of kernel send queue per connection (SO_SNDBUF)


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
        self.joins = JoinBatcher(self.context)
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
        released = await self.context.record.run(self.store.released_ids)
        if released:
            self.context.dataplane.released(released)
        await self._reconcile()
        await self.context.refresh_peers()
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
        await self.joins.close()
        await self._write_last_seen()
        await self.context.record.close()
        self._stopped.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, counted from accept until its socket is gone (not until its task
        gives up on it: a peer that stops reading would otherwise keep a socket and its send
        queue past the cap)."""
        bound_socket(writer, self.settings.handshake_timeout + CLOSE_TIMEOUT)
        session = JoinSession(self.context, self.joins, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        open_before = len(self._connections)
        self._connections.add(task)
        try:
            if open_before >= self.settings.max_connections:
                log.warning(
                    "refused %s: %d connections open (max_connections)",
                    session.peer_ip,
                    open_before,
                )
                await session.refuse("busy", "the host has too many connections open; retry")
                await session.close()
            else:
                await session.run()
        finally:
            abort_unsent(writer)
            self._connections.discard(task)

    # -- timers ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """Write the last-seen times heard since the last pass (docs/design.md, "Heartbeats"),
        then mark runners silent for runner_timeout inactive; their ids are kept."""
        timeout = self.settings.runner_timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            try:
                await self.context.write_last_seen()
                cutoff = self.clock() - timedelta(seconds=timeout)
                ids = await self.context.record.run(self.store.mark_inactive, older_than=cutoff)
            except KrnetError as exc:
                log.error("liveness check failed: %s", exc)
                continue
            except Exception:  # a timer must outlive a bug in one pass
                log.exception("liveness check failed")
                continue
            self.context.liveness.forget(ids)
            for runner_id in ids:
                log.info("runner %d inactive: silent for %g s (runner_timeout)", runner_id, timeout)

    async def _write_last_seen(self) -> None:
        """The last-seen times waiting, before the record closes: a clean stop loses none."""
        try:
            await self.context.write_last_seen()
        except KrnetError as exc:
            log.error("could not write the runners' last-seen times: %s", exc)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            await self._reconcile()

    async def _probe_forever(self) -> None:
        """The continuous data-path probe: every probe_interval, through every active tunnel."""
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            await self._dataplane_pass("probe", self._probe_active)

    async def _probe_active(self) -> None:
        runners = await self.context.record.run(self.store.runners)
        # the plane probes only the tunnels it has built and read back (HostPlane.probe)
        active = [r.runner_id for r in runners if r.status == ACTIVE]
        await asyncio.to_thread(self.context.dataplane.probe, active)

    async def _reconcile(self) -> None:
        await self._dataplane_pass("reconcile", self._reconcile_all)

    async def _reconcile_all(self) -> None:
        runners = await self.context.record.run(self.store.runners)
        await asyncio.to_thread(self.context.dataplane.reconcile, runners)
        await self.context.refresh_peers()  # tunnels adopted back too
        COUNTERS.reconciled()

    async def _dataplane_pass(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """One probe or reconcile pass; a failure is counted and logged, never the end of
        the service (the next pass may succeed)."""
        try:
            await work()
        except KrnetError as exc:
            COUNTERS.dataplane_failed()
            log.error("%s failed: %s", what, exc)
        except Exception:
            COUNTERS.dataplane_failed()
            log.exception("%s failed", what)


def bound_socket(writer: asyncio.StreamWriter, seconds: float) -> None:
    """What one connection may hold in the kernel, and for how long: a fixed send buffer
    (SEND_BUFFER; the kernel doubles it for its bookkeeping) instead of one autotuned up to
    megabytes, and TCP_USER_TIMEOUT, so the kernel resets a connection whose data stays
    unacknowledged (or unsent behind a zero window) this long, even after it is closed."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def abort_unsent(writer: asyncio.StreamWriter) -> None:
    """Drop a connection whose peer never took what the host wrote: `close()` would keep the
    socket, and its queue, as long as the peer answers zero-window probes. SO_LINGER 0 makes
    the kernel discard the queue and reset the connection instead of keeping an orphan."""
    transport = writer.transport
    if transport.get_write_buffer_size() == 0 and transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
