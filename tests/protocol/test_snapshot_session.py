"""A status session asking for the snapshot: the host's whole node, sliced, signed, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from krnet.core.model.records import JoinRequest
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import loads
from krnet.core.protocol.channel import HOST_TO_RUNNER, Channel, new_nonce
from krnet.core.protocol.client import MAX_SNAPSHOT, request_snapshot
from krnet.core.protocol.framing import MAX_LINE, encode_frame, read_frame, split_snapshot
from krnet.core.protocol.messages import PROTOCOL_VERSION, Snapshot, Status
from krnet.core.record.store import Store
from krnet.errors import ProtocolError
from tests.protocol.peers import HOST_SETTINGS, TOKEN, RunningHost, StartHost, connect, join_once
from tests.protocol.test_auth import documented_blocks

STATUS = {"mode": "host", "total": 0, "runners": []}
Answer = Callable[[asyncio.StreamWriter, Channel, dict[str, Any]], Awaitable[None]]


async def snapshot_session(port: int) -> tuple[list[Status], list[Snapshot]]:
    """Ask for status and snapshot; every part the host sends, in order, until it closes."""
    connection = await connect(port)
    try:
        await connection.send_first("status_request", {"snapshot": True})
        statuses = [await connection.receive(Status)]
        while statuses[-1].more:
            statuses.append(await connection.receive(Status))
        slices = [await connection.receive(Snapshot)]
        while slices[-1].more:
            slices.append(await connection.receive(Snapshot))
        assert await read_frame(connection.reader) is None  # then the host closes
        return statuses, slices
    finally:
        await connection.close()


def joined(slices: list[Snapshot]) -> str:
    return "".join(part.data for part in slices)


async def test_status_then_snapshot_of_the_host_node(start_host: StartHost) -> None:
    host = await start_host(join_token=TOKEN)
    await join_once(host.port, hostname="runner-a")
    await join_once(host.port, hostname="runner-b")
    statuses, slices = await snapshot_session(host.port)
    assert [r["hostname"] for r in statuses[-1].status["runners"]] == ["runner-a", "runner-b"]
    text = joined(slices)
    node = loads(text)
    assert [r.hostname for r in node.runners] == ["runner-a", "runner-b"]
    assert (node.mode, node.hostname) == ("host", socket.gethostname())
    assert "lo" in node.links and node.links["lo"].up
    assert any("runner-b" in event.message for event in node.events)
    assert node.settings == replace(host.service.settings, join_token=None)
    assert TOKEN not in text  # lines travel in clear


async def test_a_status_request_without_the_field_gets_no_snapshot(host: RunningHost) -> None:
    connection = await connect(host.port)
    await connection.send_first("status_request", {})
    assert not (await connection.receive(Status)).more
    assert await read_frame(connection.reader) is None
    await connection.close()


def fill_record(data_dir: Path, count: int) -> None:
    plan = HOST_SETTINGS.plan()
    with Store.open(data_dir) as store:
        for i in range(1, count + 1):
            request = JoinRequest(
                identity=f"{i:032x}",
                hostname=f"runner-{i}-{'h' * 100}",
                physical_ip=f"192.0.2.{i % 250 + 1}",
                vxlan_id=100,
                vxlan_port=4789,
                mtu=1450,
            )
            store.allocate(request, plan=plan, now=datetime.now(timezone.utc))


async def test_a_snapshot_larger_than_a_line_arrives_whole(
    start_host: StartHost, tmp_path: Path
) -> None:
    fill_record(tmp_path / "full", 255)
    host = await start_host(data_dir=tmp_path / "full")
    statuses, slices = await snapshot_session(host.port)
    assert len(slices) > 1 and len(joined(slices)) > MAX_LINE
    assert sum(len(part.status["runners"]) for part in statuses) == 255  # type: ignore[arg-type]
    node = loads(joined(slices))
    assert [r.runner_id for r in node.runners] == list(range(1, 256))
    status, whole = await request_snapshot("127.0.0.1", host.port, TOKEN, timeout=60.0)
    assert len(status["runners"]) == 255
    assert whole is not None and whole.runners == node.runners


def test_every_slice_of_the_worst_text_fits_one_line() -> None:
    """Quotes and backslashes double inside a JSON string: the slices still fit."""
    text = '"\\' * 40_000
    slices = split_snapshot(text)
    assert len(slices) > 2 and "".join(slices) == text
    for piece in slices:
        envelope = {"type": "snapshot", "data": piece, "more": True, "seq": 2**53, "mac": "c" * 64}
        assert len(encode_frame(envelope)) <= MAX_LINE + 1


# --- a host that misbehaves after authenticating: the client refuses what it sends ---------


@contextlib.asynccontextmanager
async def fake_host(answer: Answer) -> AsyncIterator[int]:
    """A listener that greets, reads the status_request, and lets `answer` write the rest."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host_nonce = new_nonce()
        hello = {"type": "hello", "version": PROTOCOL_VERSION, "nonce": host_nonce, "server": "x"}
        writer.write(encode_frame(hello))
        request = await read_frame(reader)
        assert request is not None
        channel = Channel(TOKEN, host_nonce, str(request["nonce"]), HOST_TO_RUNNER)
        with contextlib.suppress(ConnectionError):
            await answer(writer, channel, request)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=MAX_LINE)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


def sealed_status(channel: Channel) -> bytes:
    return channel.seal({"type": "status", "status": STATUS, "more": False})


async def client_refuses(answer: Answer) -> ProtocolError:
    async with fake_host(answer) as port:
        with pytest.raises(ProtocolError) as caught:
            await request_snapshot("127.0.0.1", port, TOKEN, timeout=60.0)
    return caught.value


def sealed_snapshot(channel: Channel, data: str, more: bool = False) -> bytes:
    return channel.seal({"type": "snapshot", "data": data, "more": more})


async def test_a_tampered_snapshot_part_is_refused() -> None:
    async def answer(writer: asyncio.StreamWriter, channel: Channel, _: dict[str, Any]) -> None:
        writer.write(sealed_status(channel))
        line = sealed_snapshot(channel, '{"format": 1}')
        writer.write(line.replace(b'format\\"', b'formax\\"'))

    refusal = await client_refuses(answer)
    assert refusal.code == "auth_failed" and "host failed authentication" in str(refusal)


async def test_a_replayed_snapshot_seq_is_refused() -> None:
    async def answer(writer: asyncio.StreamWriter, channel: Channel, _: dict[str, Any]) -> None:
        writer.write(sealed_status(channel))
        writer.write(sealed_snapshot(channel, "{", more=True))
        channel.sent_seq -= 1
        writer.write(sealed_snapshot(channel, "}"))

    refusal = await client_refuses(answer)
    assert refusal.code == "auth_failed" and "replayed" in str(refusal)


async def test_a_snapshot_past_the_bound_is_refused() -> None:
    piece = "x" * 32_256

    async def answer(writer: asyncio.StreamWriter, channel: Channel, _: dict[str, Any]) -> None:
        writer.write(sealed_status(channel))
        for _ in range(MAX_SNAPSHOT // len(piece) + 2):  # the client hangs up before the end
            writer.write(sealed_snapshot(channel, piece, more=True))
            await writer.drain()

    refusal = await client_refuses(answer)
    assert refusal.code == "frame_too_large"


async def test_a_snapshot_that_does_not_decode_is_refused() -> None:
    async def answer(writer: asyncio.StreamWriter, channel: Channel, _: dict[str, Any]) -> None:
        writer.write(sealed_status(channel))
        writer.write(sealed_snapshot(channel, '{"format": 1, "x": 2}'))

    refusal = await client_refuses(answer)
    assert refusal.code == "bad_request" and "snapshot does not decode" in str(refusal)


def test_documented_snapshot_decodes_and_matches_its_status() -> None:
    [*_, session] = documented_blocks("jsonl")
    slices = [message for message in session if message["type"] == "snapshot"]
    [status] = [message for message in session if message["type"] == "status"]
    assert [part["more"] for part in slices] == [True, False]
    node = loads("".join(str(part["data"]) for part in slices))
    assert isinstance(node, NodeSnapshot)
    runners = status["status"]["runners"]  # type: ignore[index]
    assert [r.hostname for r in node.runners] == [r["hostname"] for r in runners]
    assert node.links["vxkr1"].vxlan is not None
    assert node.links["vxkr1"].vxlan.remote == runners[0]["physical_ip"]
