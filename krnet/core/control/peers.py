"""The host's peer table in direct mode: every runner that holds an id, and where its VTEP is.

The record is the truth: after a join, leave, release, prune, reclaim or address change, and on
every reconcile pass, the host refreshes the table from the record (`HostContext.refresh_peers`);
a new generation wakes every session that follows a runner, and each pushes the whole table
(`peers` message, docs/protocol.md). Sessions never miss a change: each waits for a generation
above the last one it sent, so changes quicker than a push coalesce into the newest table.
In hub mode the table stays empty and nothing is pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pydantic import JsonValue

from krnet.core.protocol.messages import PeerEntry, Peers

if TYPE_CHECKING:
    from krnet.core.model.records import RunnerRecord
    from krnet.core.protocol.channel import Channel
    from krnet.core.protocol.framing import JsonObject

Send = Callable[[bytes], Awaitable[None]]

log = logging.getLogger("krnet.host")


class PeerTable:
    """The latest peer table and its generation, which grows by one on every change."""

    def __init__(self, *, direct: bool) -> None:
        self.direct = direct
        self.generation = 0
        self._peers: tuple[PeerEntry, ...] = ()
        self._wire: list[JsonValue] = []  # the table as every push and welcome carries it
        self._newer = asyncio.Event()

    @property
    def peers(self) -> list[PeerEntry]:
        """The table as the wire carries it, by runner id."""
        return list(self._peers)

    def replace(self, runners: Iterable[RunnerRecord]) -> bool:
        """Hold every runner of `runners` (all that hold an id, active or inactive); True and a
        new generation when the table changed."""
        peers = tuple(
            PeerEntry(runner_id=runner.runner_id, physical_ip=runner.physical_ip)
            for runner in sorted(runners, key=lambda runner: runner.runner_id)
        )
        if not self.direct or (peers == self._peers and self.generation):
            return False
        self._peers = peers
        self.generation += 1
        self._wire = [peer.model_dump() for peer in peers]
        # checked once here as each runner will parse it, not once per push: a push to each of
        # 254 runners then costs a seal (about 0.8 ms), not the 6 ms of `Channel.sign`'s check
        Peers.model_validate({**self.push_fields(), "seq": 1, "mac": "0" * 64})
        woken, self._newer = self._newer, asyncio.Event()
        woken.set()
        log.debug("peer table generation %d: %d runners", self.generation, len(peers))
        return True

    def push_fields(self) -> JsonObject:
        """The newest table's `peers` message, all but `seq` and `mac` (sealed per session)."""
        return {"type": "peers", "generation": self.generation, "peers": self._wire}

    def welcome_fields(self) -> JsonObject:
        """The welcome's peer fields: the table and its generation in direct mode, none in hub."""
        if not self.direct:
            return {}
        return {"peers": self._wire, "peers_generation": self.generation}

    async def newer_than(self, generation: int) -> int:
        """Wait until the table is newer than `generation`; its generation then."""
        while self.generation <= generation:
            await self._newer.wait()
        return self.generation


@contextlib.contextmanager
def pushing(table: PeerTable, channel: Channel, send: Send, sent: int) -> Iterator[None]:
    """While a session follows its runner: push it each table newer than generation `sent`
    (the one its welcome carried); nothing in hub mode."""
    task = asyncio.create_task(_push(table, channel, send, sent)) if table.direct else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()


async def _push(table: PeerTable, channel: Channel, send: Send, sent: int) -> None:
    # a connection that fails here fails the session's own reads too: it reports that
    with contextlib.suppress(ConnectionError, TimeoutError, asyncio.TimeoutError):
        while True:
            sent = await table.newer_than(sent)
            await send(channel.seal(table.push_fields()))  # checked once, in `replace`
