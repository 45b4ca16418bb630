"""The runner's side of direct mode: reading the host's messages and applying its peer tables.

After the welcome, a `HostReader` reads everything the host sends on the connection: each
`peers` push is applied at once (not at the next heartbeat), each `heartbeat_ack` is handed to
the heartbeat loop. The `PeerFollower` turns the host's mode and table into the data plane's
calls: `apply_peers` with every peer but this runner in direct mode, `withdraw_direct` once
when the host says hub: after direct mode, and also at this process's first hub welcome, since
a direct side built before it started (its serve down or killed while the host went back to
hub) would still send traffic to VTEPs no one answers. A lost connection changes nothing:
direct traffic keeps flowing while the host is away, and the next welcome brings the table
again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from krnet.core.model.peers import Peer
from krnet.core.protocol.messages import HeartbeatAck, PeerEntry, Peers
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from krnet.core.control.planes import RunnerDataPlane
    from krnet.core.model.settings import OverlayMode
    from krnet.core.protocol.client import HostConnection

log = logging.getLogger("krnet.runner")


class PeerFollower:
    """The peer table this runner applied last, and the mode it follows (the host's)."""

    def __init__(self, dataplane: RunnerDataPlane) -> None:
        self.dataplane = dataplane
        self.mode: OverlayMode | None = None  # None: not told yet (a direct side may be left)
        self.generation = 0
        self._applied: tuple[Peer, ...] | None = None

    async def follow(
        self, mode: OverlayMode, runner_id: int, peers: Sequence[PeerEntry] | None, generation: int
    ) -> None:
        """Apply the host's mode and (direct) table; a failure is logged, the next table or the
        plane's reconcile tries again."""
        try:
            if mode == "hub":
                if self.mode != "hub":
                    await self._withdraw_direct()
                self.mode, self._applied = mode, None
                return
            others = tuple(
                Peer(entry.runner_id, entry.physical_ip)
                for entry in peers or ()
                if entry.runner_id != runner_id
            )
            self.mode, self.generation = mode, generation
            if others != self._applied:
                await asyncio.to_thread(self.dataplane.apply_peers, others)
                self._applied = others
                log.info("peer table %d: %d other runners, direct", generation, len(others))
        except KrnetError as exc:
            self._applied = None
            log.error("could not apply the host's peer table %d: %s", generation, exc)

    async def _withdraw_direct(self) -> None:
        """Hub mode: the direct side goes, the one built here or one left from before."""
        removed = await asyncio.to_thread(self.dataplane.withdraw_direct)
        if self.mode == "direct":
            log.info("the host runs hub mode: the direct VTEP and its entries are gone")
        elif removed:  # a clean hub runner says nothing
            log.warning(
                "the host runs hub mode: removed a direct side left from before (%s)",
                "; ".join(removed),
            )

    async def probe_forever(self, interval: float) -> None:
        """Direct mode: probe every pair each `interval`, whether or not the host is there."""
        while True:
            await asyncio.sleep(interval)
            if self.mode != "direct":
                continue
            try:
                await asyncio.to_thread(self.dataplane.probe_peers)
            except KrnetError as exc:
                log.error("probing the direct peers failed: %s", exc)


class HostReader:
    """Reads the host's messages for one connection: pushes applied, answers queued."""

    def __init__(self, connection: HostConnection, follower: PeerFollower, runner_id: int) -> None:
        self.connection = connection
        self.follower = follower
        self.runner_id = runner_id
        self._acks: asyncio.Queue[HeartbeatAck] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> HostReader:
        self._task = asyncio.create_task(self._read(), name="krnet-host-reader")
        return self

    def __exit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def ack(self) -> HeartbeatAck:
        """The host's answer to the heartbeat just sent; the reader's failure raised here."""
        assert self._task is not None
        waiting = asyncio.ensure_future(self._acks.get())
        done, _ = await asyncio.wait(
            {waiting, self._task},
            timeout=self.connection.timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if waiting in done:
            return waiting.result()
        waiting.cancel()
        if self._task in done:
            self._task.result()  # the connection failed: raise why
            raise ConnectionError("the host closed the connection")
        raise asyncio.TimeoutError

    async def _read(self) -> None:
        while True:
            # between heartbeats the host may say nothing for a whole heartbeat interval
            message = await self.connection.receive_one_of((HeartbeatAck, Peers), 3600.0)
            if isinstance(message, HeartbeatAck):
                self._acks.put_nowait(message)
            elif isinstance(message, Peers):
                await self.follower.follow(
                    "direct", self.runner_id, message.peers, message.generation
                )
