"""Clients that ask for a large answer and never read it: counted and dropped by socket.

A live host over loopback; each client shrinks its receive buffer and never reads, so the
host's send queue fills and its drain times out. The host's own sockets are counted from
/proc/net/tcp (the kernel's truth, not the service's bookkeeping).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from krnet.core.control.host import SEND_BUFFER
from krnet.core.protocol.channel import Channel, new_nonce
from krnet.errors import ProtocolError
from tests.protocol.peers import TOKEN, RunningHost, StartHost, connect

LISTEN, TIME_WAIT = "0A", "06"
CAP = 4


def host_sockets(port: int) -> list[tuple[str, int]]:
    """The host's connected sockets on `port` (state, bytes in its send queue)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        state, tx_queue = fields[3], int(fields[4].split(":")[0], 16)
        if local_port == port and state not in (LISTEN, TIME_WAIT):
            found.append((state, tx_queue))
    return found


async def stalled_client(port: int) -> socket.socket:
    """Connect with a tiny receive buffer, ask for status and snapshot, and never read again."""
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connect: the window
    client.setblocking(False)
    await loop.sock_connect(client, ("127.0.0.1", port))
    hello = b""
    while not hello.endswith(b"\n"):
        hello += await loop.sock_recv(client, 1)
    host_nonce = json.loads(hello)["nonce"]
    runner_nonce = new_nonce()
    channel = Channel(TOKEN, host_nonce, runner_nonce, "krnet runner->host")
    fields = {"type": "status_request", "version": 1, "nonce": runner_nonce, "snapshot": True}
    await loop.sock_sendall(client, channel.seal(fields, sequenced=False))
    return client


async def big_answer_host(start_host: StartHost) -> RunningHost:
    """A host whose snapshot answer (its events) is megabytes: far more than any socket buffer."""
    host = await start_host(max_connections=CAP, handshake_timeout=0.5, join_token=TOKEN)
    for index in range(200):
        host.store.record_event("note", f"{index} " + "x" * 16000)
    return host


async def test_clients_that_never_read_are_dropped_and_never_exceed_the_cap(
    start_host: StartHost,
) -> None:
    host = await big_answer_host(start_host)
    clients: list[socket.socket] = []
    peak = 0
    try:
        for _ in range(3):  # three rounds of CAP stalled clients, each past the drain deadline
            clients += [await stalled_client(host.port) for _ in range(CAP)]
            await asyncio.sleep(0.1)
            with pytest.raises(ProtocolError) as caught:  # the cap holds while they drain
                await connect(host.port)
            assert caught.value.code == "busy"
            for _ in range(40):
                sockets = host_sockets(host.port)
                peak = max(peak, len(sockets))
                await asyncio.sleep(0.1)
            assert host_sockets(host.port) == []  # aborted after the drain deadline
        assert peak <= CAP + 1  # the CAP held, plus the one that got `busy`
    finally:
        for client in clients:
            client.close()


async def test_per_connection_buffering_is_bounded(start_host: StartHost) -> None:
    """What one stalled client makes the host hold: its kernel send queue stays far below the
    answer, and nothing is held past the drain deadline."""
    host = await big_answer_host(start_host)
    client = await stalled_client(host.port)
    try:
        await asyncio.sleep(0.3)
        [(_, queued)] = host_sockets(host.port)
        assert 0 < queued <= 2 * SEND_BUFFER  # the answer is megabytes, the queue a fixed buffer
        for _ in range(40):
            if not host_sockets(host.port):
                break
            await asyncio.sleep(0.1)
        assert host_sockets(host.port) == []
        assert not host.service._connections
    finally:
        client.close()
