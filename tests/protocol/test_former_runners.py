"""A runner whose record went (id reclaimed, released, left) over loopback: its host still
answers it with its key (enrolled afresh, or a signed pool_exhausted); nobody else can."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from krnet.core.control.agent import load_runner_key
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.protocol.channel import HOST_TO_RUNNER, Channel
from krnet.core.protocol.framing import MAX_LINE, encode_frame
from krnet.core.protocol.messages import Bye, Welcome
from krnet.core.protocol.parse import error_frame
from krnet.core.record.store import Store
from krnet.errors import ProtocolError
from tests.protocol.peers import (
    IMPOSTOR_ALLOCATION,
    RUNNER_KEYS,
    TOKEN,
    RunningHost,
    StartHost,
    join,
    join_once,
    wait_until,
)
from tests.protocol.test_agent import running_agent

A, B = uuid.uuid4().hex, uuid.uuid4().hex
Answer = Callable[[Channel], bytes]


def inactive(host: RunningHost) -> None:
    host.store.mark_inactive(older_than=datetime.now(timezone.utc) + timedelta(seconds=1))


async def refused(port: int, **fields: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await join_once(port, **fields)
    return caught.value


async def reclaimed(start_host: StartHost) -> RunningHost:
    """A pool of one id (/8 cut into /9 blocks): runner-a enrolled on it, then runner-b took it."""
    host = await start_host(overlay_runner_prefix=9)
    await join_once(host.port, identity=A, hostname="runner-a")
    inactive(host)
    connection, allocation = await join(host.port, identity=B, hostname="runner-b")
    await connection.close()
    assert allocation.runner_id == 1
    return host


async def test_a_reclaimed_runner_is_refused_pool_exhausted_signed_with_its_own_key(
    start_host: StartHost,
) -> None:
    host = await reclaimed(start_host)
    error = await refused(host.port, identity=A, hostname="runner-a")
    assert (error.code, error.authenticated) == ("pool_exhausted", True)
    assert "its unauthenticated message" not in str(error)


async def test_a_reclaimed_runner_is_enrolled_afresh_once_an_id_is_free(
    start_host: StartHost,
) -> None:
    host = await reclaimed(start_host)
    old_key = RUNNER_KEYS[A]
    taker, _ = await join(host.port, identity=B, hostname="runner-b")
    await taker.send({"type": "leave"})
    await taker.receive(Bye)
    await taker.close()
    connection, allocation = await join(host.port, identity=A, hostname="runner-a")
    await connection.close()
    assert allocation.runner_id == 1 and RUNNER_KEYS[A] != old_key  # a new key, a new runner
    # the new key proves it from now on; the old one no longer joins
    assert (await join_once(host.port, identity=A, hostname="runner-a")).runner_id == 1
    RUNNER_KEYS[A] = old_key
    assert (await refused(host.port, identity=A, hostname="runner-a")).code == "auth_failed"


async def test_a_runner_that_left_comes_back_as_new(start_host: StartHost) -> None:
    host = await start_host()
    connection, _ = await join(host.port, identity=A, hostname="runner-a")
    await connection.send({"type": "leave"})
    await connection.receive(Bye)
    await connection.close()
    old_key = RUNNER_KEYS[A]
    assert (await join_once(host.port, identity=A, hostname="runner-a")).runner_id == 1
    assert RUNNER_KEYS[A] != old_key
    assert host.store.events()[0].kind == "join"  # the latest event: a new runner


async def test_a_former_runner_with_a_wrong_token_is_still_auth_failed(
    start_host: StartHost,
) -> None:
    host = await reclaimed(start_host)
    with pytest.raises(ProtocolError) as caught:
        await join(host.port, token="e" * 64, identity=A, hostname="runner-a")
    assert (caught.value.code, caught.value.authenticated) == ("auth_failed", False)


def answering(answer: Answer, seen: list[dict[str, object]]) -> Callable[..., Awaitable[None]]:
    """A peer holding the token (not the runner's key) that answers every join with `answer`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = "1" * 32
        writer.write(encode_frame({"type": "hello", "version": 1, "nonce": nonce, "server": "x"}))
        join_line = json.loads(await reader.readline())
        seen.append(join_line)
        writer.write(answer(Channel(TOKEN, nonce, join_line["nonce"], HOST_TO_RUNNER)))
        await writer.drain()
        writer.close()

    return serve


def token_welcome(channel: Channel) -> bytes:
    return channel.sign(Welcome, **IMPOSTOR_ALLOCATION.model_dump(), runner_key="c" * 64)


def token_refusal(channel: Channel) -> bytes:
    return channel.seal({"type": "error", "code": "pool_exhausted", "message": "forged"})


def unsigned_refusal(channel: Channel) -> bytes:
    return error_frame("pool_exhausted", "forged")


@pytest.mark.parametrize(
    "answer",
    [token_welcome, token_refusal, unsigned_refusal],
    ids=["re-key-signed-by-the-token", "refusal-signed-by-the-token", "unsigned-refusal"],
)
async def test_nobody_but_its_host_re_keys_a_runner_or_makes_it_give_up(
    host: RunningHost, tmp_path: Path, answer: Answer
) -> None:
    data_dir = tmp_path / "runner"
    dataplane = NullRunnerDataPlane()
    with Store.open(data_dir) as store:
        async with running_agent(host.port, data_dir, dataplane=dataplane, store=store) as agent:
            await wait_until(lambda: agent.applied is not None and bool(store.runners()))
        key = load_runner_key(data_dir)
        seen: list[dict[str, object]] = []
        server = await asyncio.start_server(answering(answer, seen), "127.0.0.1", 0, limit=MAX_LINE)
        port = server.sockets[0].getsockname()[1]
        async with running_agent(port, data_dir, dataplane=dataplane, store=store):
            await wait_until(lambda: len(seen) >= 2)
        server.close()
        assert [runner.runner_id for runner in store.runners()] == [1]  # its record kept
    assert [name for name, _ in dataplane.calls].count("apply") == 1  # the real host's only
    assert ("withdraw", None) not in dataplane.calls
    assert load_runner_key(data_dir) == key
