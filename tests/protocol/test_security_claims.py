"""Claims of docs/security.md checked against a live host over loopback: reflection, no tunnel
without the token, and the token never on the wire."""

from __future__ import annotations

import asyncio
import json

from krnet.core.protocol.channel import HOST_TO_RUNNER, RUNNER_TO_HOST, Channel, new_nonce
from krnet.core.protocol.framing import MAX_LINE
from tests.protocol.peers import TOKEN, StartHost, join_fields, join_once


async def opened(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE * 2)
    return reader, writer, json.loads(await reader.readline())["nonce"]


def signed_join(host_nonce: str, *, direction: str, token: str = TOKEN, **fields: object) -> bytes:
    runner_nonce = new_nonce()
    channel = Channel(token, host_nonce, runner_nonce, direction)
    body = {"type": "join", "version": 1, "nonce": runner_nonce, **join_fields(), **fields}
    return channel.seal(body, sequenced=False)


async def test_a_join_signed_in_the_host_direction_is_refused(start_host: StartHost) -> None:
    """Reflection: a message MACed as the host signs (the direction label host->runner), as a
    peer would reflect the host's own lines back at it, is refused like a wrong token."""
    host = await start_host()
    reader, writer, host_nonce = await opened(host.port)
    assert HOST_TO_RUNNER != RUNNER_TO_HOST
    writer.write(signed_join(host_nonce, direction=HOST_TO_RUNNER))
    reply = json.loads(await reader.readline())
    writer.close()
    assert (reply["type"], reply["code"]) == ("error", "auth_failed")
    assert host.store.runners() == []
    assert [name for name, _ in host.dataplane.calls] == ["reconcile"]


async def test_no_tunnel_for_a_peer_without_the_token(start_host: StartHost) -> None:
    host = await start_host()
    for token in ("0" * 64, "f" * 64, TOKEN[:-1] + "0"):
        reader, writer, host_nonce = await opened(host.port)
        writer.write(signed_join(host_nonce, direction=RUNNER_TO_HOST, token=token))
        reply = json.loads(await reader.readline())
        writer.close()
        assert reply["code"] == "auth_failed"
    # the data plane was never asked for anything but the start-up reconcile
    assert host.dataplane.calls == [("reconcile", [])]
    assert host.store.runners() == []


async def test_the_token_is_never_on_the_wire(start_host: StartHost) -> None:
    """Every byte the host sends in a join, heartbeat, status and snapshot answer, scanned for
    the token (the snapshot carries the host's settings, which hold it when configured)."""
    host = await start_host(join_token=TOKEN)
    for name in ("runner-a", "runner-b"):
        await join_once(host.port, hostname=name)
    reader, writer, host_nonce = await opened(host.port)
    runner_nonce = new_nonce()
    channel = Channel(TOKEN, host_nonce, runner_nonce, RUNNER_TO_HOST)
    body = {"type": "status_request", "version": 1, "nonce": runner_nonce, "snapshot": True}
    writer.write(channel.seal(body, sequenced=False))
    sent = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    assert b'"type":"snapshot"' in sent.replace(b" ", b"")
    for form in (TOKEN, TOKEN.upper(), bytes.fromhex(TOKEN).hex(":")):
        assert form.encode() not in sent
    assert bytes.fromhex(TOKEN) not in sent
