"""The host's answers to a `status_request`: its status, then, when asked, its whole node.

A status session reads; it changes nothing. The status is the object `krnet node overlay
--json` prints on the host; the snapshot is the node a remote `krnet tui --connect` shows.
Both are cut into line-sized parts, each signed, the last one with `"more": false`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar, cast

from krnet.core.protocol.framing import JsonObject, canonical_json, split_snapshot, split_status
from krnet.core.protocol.messages import Snapshot, Status

if TYPE_CHECKING:
    from krnet.core.control.context import HostContext
    from krnet.core.protocol.channel import Channel

Send = Callable[[bytes], Awaitable[None]]
T = TypeVar("T")


async def answer_status(
    context: HostContext, channel: Channel, send: Send, *, snapshot: bool
) -> None:
    """The `status` parts, then the `snapshot` slices when the request asked for them."""
    for part, more in _with_more(split_status(await _status(context))):
        await send(channel.sign(Status, status=part, more=more))
    if snapshot:
        text = await asyncio.to_thread(_snapshot_text, context)
        for piece, more in _with_more(split_snapshot(text)):
            await send(channel.sign(Snapshot, data=piece, more=more))


async def _status(context: HostContext) -> JsonObject:
    from krnet.core.observe.status import overlay_status, probe_extra

    record, settings = context.record, context.settings
    runners = await record.run(record.store.runners)
    now = context.clock()
    status = overlay_status(
        mode="host",
        settings=settings,
        runners=runners,
        now=now,
        runner_timeout=settings.runner_timeout,
        extra=probe_extra(record.store.path.parent, settings, now),
    )
    return cast(JsonObject, status)  # JSON values: `krnet node overlay --json` prints it


def _snapshot_text(context: HostContext) -> str:
    """This node's snapshot as canonical JSON, without the join token or the runners' identity
    hashes: lines travel in clear, and a status client is not a runner.

    Gathered off the loop (netlink, iptables-save and Docker are blocking).
    """
    from krnet.core.model.settings import LoadedSettings
    from krnet.core.model.snapshot_json import snapshot_to_json
    from krnet.core.observe.gather import gather_snapshot

    settings = replace(context.settings, join_token=None)
    loaded = LoadedSettings(settings, data_dir=context.record.store.path.parent)
    gathered = gather_snapshot(loaded, events=True)
    runners = tuple(replace(runner, identity_hash=None) for runner in gathered.runners)
    snapshot = replace(gathered, runners=runners)
    return canonical_json(snapshot_to_json(snapshot)).decode()


def _with_more(parts: Sequence[T]) -> Iterator[tuple[T, bool]]:
    """Each part with `more`: true until the last."""
    for index, part in enumerate(parts):
        yield part, index < len(parts) - 1
