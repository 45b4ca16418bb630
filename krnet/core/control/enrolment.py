"""Enrolment: a join proven by its runner key, and the key a new runner gets in its welcome
(docs/protocol.md, "Enrolment"); one place for both ends of a runner's credential on the host."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from krnet.core.model.text import printable
from krnet.core.protocol.channel import Channel, mac_key
from krnet.core.protocol.framing import JsonObject
from krnet.core.protocol.messages import Allocation, Join, Welcome
from krnet.errors import ProtocolError

if TYPE_CHECKING:
    from krnet.core.control.context import HostContext

log = logging.getLogger("krnet.host")


async def proven_runner(
    context: HostContext, channel: Channel, join: Join, obj: JsonObject
) -> int | None:
    """Who signed a join the token alone does not: the id of the enrolled runner whose key
    (with the token) signs it, or None for a former runner whose retired key does (its record
    went: it is enrolled afresh, answered in that key); the one `auth_failed` answer else."""
    record = context.record
    credentials = await record.run(record.store.credentials, join.identity)
    if credentials is not None and _signed(context, channel, obj, credentials[1]):
        return credentials[0]
    retired = await record.run(record.store.retired_key, join.identity)
    if retired is not None and _signed(context, channel, obj, retired):
        log.info(
            "%s (%s) is a former runner (its id was reclaimed or released): enrolling it afresh",
            printable(join.hostname),
            join.physical_ip,
        )
        return None
    # one answer whether or not the identity is enrolled: it tells a peer nothing
    raise ProtocolError(
        "auth_failed",
        "message authentication failed: signed neither by this cluster's join token nor "
        "by a runner key this host issued (compare join_token / join_token_file / "
        "KRNET_JOIN_TOKEN with `krnet token` on the host; a runner whose host lost its "
        "record: delete runner_key in the runner's data dir to enrol again)",
    )


def _signed(context: HostContext, channel: Channel, obj: JsonObject, runner_key: str) -> bool:
    """Whether `obj` is signed by the token and `runner_key`; the channel is keyed so if it is."""
    channel.token = mac_key(context.token, runner_key)
    try:
        channel.check(obj, sequenced=False)
    except ProtocolError:
        return False
    return True


async def send_welcome(
    context: HostContext,
    channel: Channel,
    send: Callable[[bytes], Awaitable[None]],
    allocation: Allocation,
    runner_key: str | None,
) -> None:
    """The welcome (in direct mode with the peer table); on enrolment it carries `runner_key`,
    signed by the token alone (a former runner's: by the token and its retired key), and the
    channel signs everything after with the token and the new key."""
    fields = {**allocation.model_dump(), **context.peers.welcome_fields()}
    if runner_key is None:
        await send(channel.sign(Welcome, **fields))
        return
    await send(channel.sign(Welcome, **fields, runner_key=runner_key))
    channel.enrol(context.token, runner_key)
