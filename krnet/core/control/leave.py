"""A runner giving its id back before `krnet cleanup`: join as itself, then `leave`.

The host then frees the id, removes `vxkrN` and (direct mode) tells every other runner to drop
this one's entries at once, instead of after `krnet node release`. The join is signed with the
runner's key like every join of an enrolled runner; nothing it answers is configured here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from krnet.core.control.agent import KEY_FILE, load_identity, load_runner_key
from krnet.core.control.joining import join_request
from krnet.core.protocol.channel import mac_key
from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.messages import Bye, Join, Leave, Peers, Welcome, join_fields
from krnet.errors import KrnetError

if TYPE_CHECKING:
    from pathlib import Path

    from krnet.core.model.settings import Settings

log = logging.getLogger("krnet.runner")


def leave_host(settings: Settings, data_dir: Path, token: str) -> str:
    """Tell the host this runner leaves; one line saying what happened (never raises for an
    unreachable or refusing host: cleanup goes on either way)."""
    where = f"{settings.host_address}:{settings.join_port}"
    if settings.host_address is None or load_runner_key(data_dir) is None:
        return "no host to tell: this runner never enrolled (no runner_key in its data dir)"
    try:
        runner_id = asyncio.run(_leave(settings, data_dir, token))
    except (OSError, asyncio.TimeoutError, KrnetError) as exc:
        return (
            f"could not tell the host at {where} that this runner leaves "
            f"({exc or type(exc).__name__}): its id stays held until `krnet node release` there"
        )
    (data_dir / KEY_FILE).unlink(missing_ok=True)  # it went with the record: enrol afresh
    return f"left the host at {where}: runner id {runner_id} is free, its tunnel and peers gone"


async def _leave(settings: Settings, data_dir: Path, token: str) -> int:
    """One connection: join with this runner's key, `leave`, wait for `bye`; the id it held."""
    assert settings.host_address is not None
    key = load_runner_key(data_dir)
    connection = await HostConnection.open(
        settings.host_address,
        settings.join_port,
        mac_key(token, key),
        settings.handshake_timeout,
    )
    try:
        request = join_request(settings, load_identity(data_dir), connection.local_address)
        await connection.send_message(Join, **join_fields(request))
        welcome = await connection.receive(Welcome)
        if welcome.runner_key is not None:  # the host had lost this runner's key: a new one
            connection.channel.enrol(token, welcome.runner_key)
        await connection.send_message(Leave)
        while not isinstance(await connection.receive_one_of((Bye, Peers)), Bye):
            continue  # a peer table pushed before the host read the leave
        return welcome.runner_id
    finally:
        await connection.close()
