"""The client side of the join protocol: a verified connection to the host, `status`, `snapshot`.

The runner agent, `krnet node overlay --connect`, `krnet tui --connect` and bench/join.py all
talk to the host through `HostConnection`, so every client checks the host the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from krnet.core.protocol import (
    MAX_LINE,
    PROTOCOL_VERSION,
    RUNNER_TO_HOST,
    Channel,
    Error,
    Hello,
    Message,
    Snapshot,
    Status,
    new_nonce,
    parse_message,
    raise_if_error,
    read_frame,
)
from krnet.errors import KrnetError, ProtocolError, UsageError

if TYPE_CHECKING:
    from krnet.config import Settings
    from krnet.core.snapshot import NodeSnapshot

MessageT = TypeVar("MessageT", bound=Message)
T = TypeVar("T")
MAX_SNAPSHOT = 16 * 2**20  # characters of snapshot text a client takes from one host


class HostConnection:
    """One connection to the host's join port, past `hello`: signs what it sends, checks replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        channel: Channel,
        timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.channel = channel
        self.timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, token: str, timeout: float) -> HostConnection:
        """Connect and read the host's `hello` (or its refusal, e.g. `busy`)."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE), timeout
        )
        try:
            obj = await asyncio.wait_for(read_frame(reader), timeout)
            if obj is None:
                raise ConnectionError("the host closed the connection before hello")
            hello = parse_message(obj, (Hello, Error))
            raise_if_error(hello, "host")
            assert isinstance(hello, Hello)
        except BaseException:
            writer.close()
            raise
        channel = Channel(token, hello.nonce, new_nonce(), RUNNER_TO_HOST)
        return cls(reader, writer, channel, timeout)

    @property
    def local_address(self) -> str:
        """The address this side of the connection has (the default runner_address)."""
        return str(self.writer.get_extra_info("sockname")[0])

    @property
    def nonce(self) -> str:
        return self.channel.runner_nonce

    async def send(self, fields: dict[str, Any], *, sequenced: bool = True) -> None:
        self.writer.write(self.channel.seal(fields, sequenced=sequenced))
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def send_first(self, kind: str, fields: dict[str, Any]) -> None:
        """The opening `join` or `status_request`: version and nonce, no seq."""
        first = {"type": kind, "version": PROTOCOL_VERSION, "nonce": self.nonce, **fields}
        await self.send(first, sequenced=False)

    async def receive(self, *expected: type[MessageT]) -> MessageT:
        """The host's next message, authenticated; its `error` raised as ProtocolError."""
        obj = await asyncio.wait_for(read_frame(self.reader), self.timeout)
        if obj is None:
            raise ConnectionError("the host closed the connection")
        message = parse_message(obj, (*expected, Error))
        raise_if_error(message, "host")
        try:
            self.channel.check(obj)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"host failed authentication: {exc}") from None
        return message  # type: ignore[return-value]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), self.timeout)


async def request_status(host: str, port: int, token: str, timeout: float) -> dict[str, Any]:
    """The host's `krnet node overlay --json` object, over an authenticated connection."""
    connection = await HostConnection.open(host, port, token, timeout)
    try:
        await connection.send_first("status_request", {})
        return await _receive_status(connection)
    finally:
        await connection.close()


async def request_snapshot(
    host: str, port: int, token: str, timeout: float
) -> tuple[dict[str, Any], NodeSnapshot | None]:
    """The host's status and its whole node; the node is None from a krnet that cannot send it."""
    connection = await HostConnection.open(host, port, token, timeout)
    try:
        await connection.send_first("status_request", {"snapshot": True})
        try:
            status = await _receive_status(connection)
        except ProtocolError as exc:
            if exc.code != "bad_request":
                raise
        else:
            return status, await _receive_snapshot(connection)
    finally:
        await connection.close()
    # a krnet from before snapshots refuses the field as unknown: ask it for the status alone
    return await request_status(host, port, token, timeout), None


async def _receive_status(connection: HostConnection) -> dict[str, Any]:
    """The `status` parts, their runners joined."""
    status: dict[str, Any] = {}
    runners: list[Any] = []
    more = True
    while more:
        part: Status = await connection.receive(Status)
        status = dict(part.status)
        runners += list(part.status.get("runners") or [])  # type: ignore[arg-type]
        more = part.more
    return {**status, "runners": runners}


async def _receive_snapshot(connection: HostConnection) -> NodeSnapshot:
    """The `snapshot` slices joined and decoded; refused past MAX_SNAPSHOT characters."""
    from krnet.core.snapshot_json import loads

    slices: list[str] = []
    size, more = 0, True
    while more:
        part: Snapshot = await connection.receive(Snapshot)
        size += len(part.data)
        if size > MAX_SNAPSHOT:
            raise ProtocolError(
                "frame_too_large",
                f"the host's snapshot exceeds {MAX_SNAPSHOT} characters; refused",
            )
        slices.append(part.data)
        more = part.more
    try:
        return loads("".join(slices))
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ProtocolError(
            "bad_request",
            f"the host's snapshot does not decode ({exc}): run the same krnet release on both ends",
        ) from None


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """HOST[:PORT] (IPv6 as [ADDR]:PORT) to a host and port."""
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, tail = text.partition(":")
        port = _port(tail, text)
    if not host:
        raise UsageError(f"--connect {text!r} names no host: use HOST or HOST:PORT")
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"--connect {whole!r}: the port must be a number from 1 to 65535")
    return int(text)


def fetch_remote_status(address: str, settings: Settings, data_dir: Path) -> dict[str, Any]:
    """`status` from the host at HOST[:PORT], authenticated with this node's join token."""
    return _fetch(address, settings, data_dir, request_status)


def fetch_remote_snapshot(
    address: str, settings: Settings, data_dir: Path
) -> tuple[dict[str, Any], NodeSnapshot | None]:
    """`status` and the whole node from the host at HOST[:PORT] (None from an older krnet)."""
    return _fetch(address, settings, data_dir, request_snapshot)


def _fetch(
    address: str,
    settings: Settings,
    data_dir: Path,
    request: Callable[[str, int, str, float], Coroutine[Any, Any, T]],
) -> T:
    """Run one request against HOST[:PORT]; failures become one line naming the host."""
    from krnet.core.token import read_token

    host, port = parse_address(address, settings.join_port)
    token = read_token(settings, data_dir)
    try:
        return asyncio.run(request(host, port, token, settings.handshake_timeout))
    except ProtocolError as exc:
        raise KrnetError(f"{host}:{port}: {exc}") from None
    # asyncio's TimeoutError is its own class before Python 3.11 (the OS's is an OSError)
    except (OSError, asyncio.TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
        raise KrnetError(
            f"cannot reach the host at {host}:{port} ({reason}): check the address and port "
            "(join_port) and that `krnet serve` runs there"
        ) from None
