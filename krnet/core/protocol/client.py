"""The client side of the join protocol: a verified connection to the host, `status`, `snapshot`.

The runner agent, `krnet node overlay --connect`, `krnet tui --connect` and bench/join.py all
talk to the host through `HostConnection`, so every client checks the host the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import JsonValue

from krnet.core.protocol.channel import RUNNER_TO_HOST, Channel, new_nonce
from krnet.core.protocol.framing import MAX_LINE, JsonObject, read_frame
from krnet.core.protocol.messages import (
    PROTOCOL_VERSION,
    Error,
    Hello,
    Message,
    Released,
    ReleasedRunner,
    ReleaseRequest,
    Snapshot,
    Status,
    StatusRequest,
)
from krnet.core.protocol.parse import parse_message, raise_if_error
from krnet.errors import KrnetError, ProtocolError, UsageError

if TYPE_CHECKING:
    from krnet.core.model.settings import Settings
    from krnet.core.model.snapshot import NodeSnapshot

MessageT = TypeVar("MessageT", bound=Message)
T = TypeVar("T")
MAX_SNAPSHOT = 16 * 2**20  # characters of snapshot text a client takes from one host
INPUT_REFUSALS = ("unknown_runner", "runner_active")  # the host refused what the user asked


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

    async def send_message(self, kind: type[Message], /, **fields: JsonValue) -> None:
        """A `kind` message, checked against the host's model; the opening one (`join`,
        `status_request`) also carries the protocol version and this side's nonce."""
        if "seq" not in kind.model_fields:
            fields = {"version": PROTOCOL_VERSION, "nonce": self.nonce, **fields}
        await self._write(self.channel.sign(kind, **fields))

    async def send(self, fields: Mapping[str, JsonValue], *, sequenced: bool = True) -> None:
        """`fields` signed as they are, unchecked: for peers that play a runner (bench, tests)."""
        await self._write(self.channel.seal(fields, sequenced=sequenced))

    async def send_first(self, kind: str, fields: Mapping[str, JsonValue]) -> None:
        """An opening `kind` of `fields` as they are, unchecked: version and nonce, no seq."""
        first = {"type": kind, "version": PROTOCOL_VERSION, "nonce": self.nonce, **fields}
        await self.send(first, sequenced=False)

    async def _write(self, line: bytes) -> None:
        self.writer.write(line)
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    async def receive(self, expected: type[MessageT]) -> MessageT:
        """The host's next message, authenticated; its `error` raised as ProtocolError."""
        message = await self.receive_one_of((expected,))
        assert isinstance(message, expected)  # parse_message gave `expected` or Error, raised
        return message

    async def receive_one_of(
        self, expected: tuple[type[Message], ...], timeout: float | None = None
    ) -> Message:
        """The host's next message, one of `expected` (a `peers` push may come between a
        heartbeat and its answer), authenticated; `timeout` defaults to the connection's."""
        obj = await asyncio.wait_for(read_frame(self.reader), timeout or self.timeout)
        if obj is None:
            raise ConnectionError("the host closed the connection")
        message = parse_message(obj, (*expected, Error))
        if isinstance(message, Error):
            raise_if_error(message, "host", authenticated=self._signed_by_host(message, obj))
        try:
            self.channel.check(obj)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"host failed authentication: {exc}") from None
        return message

    def _signed_by_host(self, error: Error, obj: JsonObject) -> bool:
        """Whether an `error` carries this session's MAC: the host refused, not a bystander."""
        if error.mac is None:
            return False
        try:
            self.channel.check(obj)
        except ProtocolError:
            return False  # forged or from another session: an unauthenticated refusal
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), self.timeout)


async def request_status(host: str, port: int, token: str, timeout: float) -> dict[str, object]:
    """The host's `krnet node overlay --json` object, over an authenticated connection."""
    connection = await HostConnection.open(host, port, token, timeout)
    try:
        await connection.send_message(StatusRequest)
        return await _receive_status(connection)
    finally:
        await connection.close()


async def request_snapshot(
    host: str, port: int, token: str, timeout: float
) -> tuple[dict[str, object], NodeSnapshot]:
    """The host's status and its whole node, over one authenticated connection."""
    connection = await HostConnection.open(host, port, token, timeout)
    try:
        await connection.send_message(StatusRequest, snapshot=True)
        status = await _receive_status(connection)
        return status, await _receive_snapshot(connection)
    finally:
        await connection.close()


async def request_release(
    host: str, port: int, token: str, timeout: float, fields: dict[str, JsonValue]
) -> list[ReleasedRunner]:
    """Ask the host to release runners (`release_request` of `fields`); what it released."""
    connection = await HostConnection.open(host, port, token, timeout)
    try:
        await connection.send_message(ReleaseRequest, **fields)
        released: list[ReleasedRunner] = []
        more = True
        while more:
            part = await connection.receive(Released)
            released += part.runners
            more = part.more
        return released
    finally:
        await connection.close()


async def _receive_status(connection: HostConnection) -> dict[str, object]:
    """The `status` parts, their runners joined (the object `krnet node overlay --json` prints)."""
    status: JsonObject = {}
    runners: list[JsonValue] = []
    more = True
    while more:
        part = await connection.receive(Status)
        status = dict(part.status)
        part_runners = part.status.get("runners")
        runners += part_runners if isinstance(part_runners, list) else []
        more = part.more
    return {**status, "runners": runners}


async def _receive_snapshot(connection: HostConnection) -> NodeSnapshot:
    """The `snapshot` slices joined and decoded; refused past MAX_SNAPSHOT characters."""
    from krnet.core.model.snapshot_json import loads

    slices: list[str] = []
    size, more = 0, True
    while more:
        part = await connection.receive(Snapshot)
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


def fetch_remote_status(address: str, settings: Settings, data_dir: Path) -> dict[str, object]:
    """`status` from the host at HOST[:PORT], authenticated with this node's join token."""
    return _fetch(address, settings, data_dir, request_status)


def fetch_remote_snapshot(
    address: str, settings: Settings, data_dir: Path
) -> tuple[dict[str, object], NodeSnapshot]:
    """`status` and the whole node from the host at HOST[:PORT]."""
    return _fetch(address, settings, data_dir, request_snapshot)


def release_on_host(
    address: str, settings: Settings, data_dir: Path, fields: dict[str, JsonValue], *, here: bool
) -> list[ReleasedRunner]:
    """`release_request` to the host at HOST[:PORT] (`here`: this node's own running host)."""

    async def request(host: str, port: int, token: str, timeout: float) -> list[ReleasedRunner]:
        return await request_release(host, port, token, timeout, fields)

    return _fetch(address, settings, data_dir, request, here=here)


def _fetch(
    address: str,
    settings: Settings,
    data_dir: Path,
    request: Callable[[str, int, str, float], Coroutine[object, None, T]],
    *,
    here: bool = False,
) -> T:
    """Run one request against HOST[:PORT]; failures become one line naming the host."""
    from krnet.core.protocol.token import read_token

    host, port = parse_address(address, settings.join_port)
    token = read_token(settings, data_dir)
    try:
        return asyncio.run(request(host, port, token, settings.handshake_timeout))
    except ProtocolError as exc:
        if exc.code in INPUT_REFUSALS:
            raise UsageError(str(exc)) from None
        raise KrnetError(f"{host}:{port}: {exc}") from None
    # asyncio's TimeoutError is its own class before Python 3.11 (the OS's is an OSError)
    except (OSError, asyncio.TimeoutError) as exc:
        if here and isinstance(exc, ConnectionRefusedError):
            raise KrnetError(
                f"no krnet host is running on this node: nothing listens on {host}:{port} "
                "(join_port); start `krnet serve` (it owns the record and the kernel)"
            ) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
        raise KrnetError(
            f"cannot reach the host at {host}:{port} ({reason}): check the address and port "
            "(join_port) and that `krnet serve` runs there"
        ) from None
