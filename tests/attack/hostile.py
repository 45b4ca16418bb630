"""Hostile peers for a live host: slow connections, fuzzed frames and sessions, a host process.

Shared by tests/attack/test_attack.py (bounded runs that assert outcomes) and scripts/attack.py
(a longer campaign that prints figures). Everything talks to a real `krnet serve` over loopback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from krnet.core.protocol.channel import (
    HOST_TO_RUNNER,
    RUNNER_TO_HOST,
    Channel,
    compute_mac,
    mac_key,
    new_nonce,
)
from krnet.core.protocol.framing import MAX_LINE
from krnet.core.protocol.messages import Heartbeat, Leave
from krnet.core.protocol.parse import MESSAGES, parse_message
from krnet.errors import ProtocolError
from tests.protocol.peers import (
    TOKEN,
    child_environment,
    free_port,
    join_fields,
    spawn_serve,
    wait_for_port,
)
from tests.protocol.test_fuzz import json_values

REFUSALS = {"bad_request", "frame_too_large", "unsupported_version", "auth_failed", "timeout"}

# -- the host under attack -----------------------------------------------------------------------


@dataclass
class HostProcess:
    """A `krnet serve` host in its own process; its log is drained so it never blocks on it."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path
    data_dir: Path
    log_lines: list[str] = field(default_factory=list)

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log_lines.append(line.decode(errors="replace"))

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        """The host's resident memory now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS"))[6:-3])

    def overlay(self) -> dict[str, Any]:
        """`krnet node overlay --json` on the host's own record (a separate process)."""
        command = [sys.executable, "-m", "krnet", "--config", str(self.config)]
        result = subprocess.run(
            [*command, "--data-dir", str(self.data_dir), "node", "overlay", "--json"],
            env=child_environment(self.config.parent),
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(result.stdout))


@contextmanager
def host_process(directory: Path, **settings: Any) -> Iterator[HostProcess]:
    """A host (overlay disabled: no root) on a free loopback port; stopped with SIGTERM at exit."""
    port = free_port()
    base = {"mode": "host", "join_bind": "127.0.0.1", "join_port": port, "overlay_enabled": False}
    process = spawn_serve(directory, "host", base | settings)
    host = HostProcess(process, port, directory / "host.toml", directory / "host")
    drain = threading.Thread(target=host._drain, daemon=True)
    drain.start()
    try:
        asyncio.run(wait_for_port(port, process))
        yield host
    finally:
        if host.alive():
            process.terminate()
        process.wait(timeout=30)
        drain.join(timeout=30)


def runners_by_id(overlay: dict[str, Any]) -> dict[int, tuple[str, str, int, str]]:
    """What a record says about each runner that an attack could change."""
    return {
        runner["runner_id"]: (
            runner["hostname"],
            runner["physical_ip"],
            runner["vni"],
            runner["subnet"],
        )
        for runner in overlay["runners"]
    }


# -- slow connections (slowloris) ----------------------------------------------------------------

SLOW_KINDS = ("silent", "trickle", "partial")
PARTIAL_LINE = b'{"type": "join", "version": 1, "nonce": "'


@dataclass
class SlowClient:
    """One connection that never completes its first message."""

    kind: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    first: dict[str, Any]  # the host's first line: hello, or error busy
    trickle: asyncio.Task[None] | None = None

    async def rest(self, timeout: float) -> list[dict[str, Any]]:
        """Every line the host sends after the first, until it closes the connection."""
        lines = []
        while line := await asyncio.wait_for(self.reader.readline(), timeout):
            lines.append(json.loads(line))
        return lines

    async def close(self) -> None:
        if self.trickle is not None:
            self.trickle.cancel()
        self.writer.close()


async def _trickle(writer: asyncio.StreamWriter, interval: float) -> None:
    """A byte every `interval` seconds, never a newline, until the host hangs up."""
    try:
        writer.write(b"{")
        while True:
            await asyncio.sleep(interval)
            writer.write(b" ")
            await writer.drain()
    except (ConnectionError, RuntimeError):
        return


async def open_slow(port: int, kind: str, interval: float = 1.0) -> SlowClient:
    """Connect, read the host's first line, then misbehave the way `kind` says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE)
    first = json.loads(await asyncio.wait_for(reader.readline(), 60))
    client = SlowClient(kind, reader, writer, first)
    if first["type"] == "hello":
        if kind == "partial":
            writer.write(PARTIAL_LINE)
        elif kind == "trickle":
            client.trickle = asyncio.create_task(_trickle(writer, interval))
    return client


async def flood(port: int, count: int, interval: float = 1.0) -> list[SlowClient]:
    """`count` slow connections, the kinds in turn, all opened at once."""
    kinds = [SLOW_KINDS[index % len(SLOW_KINDS)] for index in range(count)]
    return list(await asyncio.gather(*(open_slow(port, kind, interval) for kind in kinds)))


# -- fuzzed frames and sessions --------------------------------------------------------------------

EXTREMES = st.sampled_from(
    [
        *(2**53 + 1, 2**64, -1, 0, 10**100, 1e308, -0.0, True, None),
        *("", "é", "\u0000", "\ud800", "\n", "x" * 300),
        *({"$ne": 1}, [1] * 50, {"a": {"b": {"c": [None]}}}),
    ]
)
VALUES = json_values | EXTREMES


@dataclass(frozen=True)
class RawBytes:
    """Anything at all after hello, then end of stream (or a reset)."""

    payload: bytes
    reset: bool


@dataclass(frozen=True)
class SignedFirst:
    """A join or status_request signed with the real token, one field changed or a key repeated."""

    kind: str  # "join" | "status_request"
    field: str
    value: Any  # DROP removes the field
    repeat_key: bool


@dataclass(frozen=True)
class Step:
    """One message after welcome, with its seq and MAC each possibly wrong."""

    kind: str  # "heartbeat" | "leave"
    seq: str  # how seq is chosen, a key of SEQS
    mac: str  # "good" | "random" | "other_session" | "reflected" | "missing"
    observed: Any
    applied: Any


@dataclass(frozen=True)
class Session:
    """A real join, then steps; with `half_close` the runner shuts its sending side first."""

    steps: tuple[Step, ...]
    half_close: bool


DROP = "<drop>"
SEQS = {
    "next": lambda last: last + 1,
    "same": lambda last: last,
    "older": lambda last: last - 1,
    "zero": lambda last: 0,
    "skip": lambda last: last + 1000,
    "max": lambda last: 2**53,
    "beyond": lambda last: 2**53 + 1,
    "float": lambda last: last + 1.0,
    "text": lambda last: str(last + 1),
}
GOOD_APPLIED = {"runner_id": 1, "vni": 101, "subnet": "10.1.0.0/16", "mtu": 1450}

raw_bytes = st.builds(
    RawBytes,
    st.binary(max_size=2048)
    | st.lists(st.dictionaries(st.text(max_size=12), VALUES, max_size=6), max_size=3).map(
        lambda objects: b"".join(json.dumps(obj).encode() + b"\n" for obj in objects)
    )
    | st.builds(
        lambda kind, body: json.dumps({"type": kind, **body}).encode() + b"\n",
        st.sampled_from(sorted(MESSAGES)),
        st.dictionaries(st.text(max_size=12), VALUES, max_size=6),
    ),
    st.booleans(),
)
signed_first = st.builds(
    SignedFirst,
    st.sampled_from(["join", "status_request"]),
    st.sampled_from([*join_fields(), "type", "version", "nonce", "mac", "extra"]),
    VALUES | st.just(DROP),
    st.booleans(),
)
steps = st.builds(
    Step,
    st.sampled_from(["heartbeat", "heartbeat", "heartbeat", "leave"]),
    st.sampled_from(sorted(SEQS)),
    st.sampled_from(["good", "good", "random", "other_session", "reflected", "missing"]),
    st.just({"mtu": 1450}) | st.dictionaries(st.text(max_size=10), VALUES, max_size=4) | VALUES,
    st.just(None) | st.just(GOOD_APPLIED) | VALUES,
)
sessions = st.builds(Session, st.lists(steps, min_size=1, max_size=4).map(tuple), st.booleans())
CASES = raw_bytes | signed_first | sessions


@dataclass
class Outcome:
    """What the host answered; `welcomed` maps runner id to what a real join made it record."""

    codes: list[str] = field(default_factory=list)
    acks: int = 0
    welcomed: dict[int, tuple[str, str, int, str]] = field(default_factory=dict)


class Peer:
    """A blocking connection to the host, past hello."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stream = self.sock.makefile("rb")
        self.hello = json.loads(self.stream.readline())
        assert self.hello["type"] == "hello", self.hello

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict[str, Any] | None:
        data = self.stream.readline()
        return json.loads(data) if data else None

    def lines(self) -> list[dict[str, Any]]:
        """Everything until the host closes."""
        result = []
        while (line := self.line()) is not None:
            result.append(line)
        return result

    def close(self, reset: bool = False) -> None:
        if reset:  # RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.stream.close()
        self.sock.close()


def refused(lines: list[dict[str, Any]], allowed: set[str]) -> str:
    """The code of the single `error` the host sent before closing."""
    assert len(lines) == 1, lines
    [error] = lines
    assert error["type"] == "error" and error["code"] in allowed, error
    return str(error["code"])


def run_case(port: int, case: RawBytes | SignedFirst | Session) -> Outcome:
    """Play one case against the host and check every answer against the protocol."""
    outcome = Outcome()
    peer = Peer(port)
    try:
        if isinstance(case, RawBytes):
            peer.send(case.payload)
            if case.reset:
                return outcome
            peer.sock.shutdown(socket.SHUT_WR)
            lines = peer.lines()
            if case.payload:
                outcome.codes.append(refused(lines, REFUSALS - {"timeout"}))
            else:
                assert lines == []
        elif isinstance(case, SignedFirst):
            _signed_first(peer, case, outcome)
        else:
            _session(peer, port, case, outcome)
    finally:
        peer.close(reset=isinstance(case, RawBytes) and case.reset)
    return outcome


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _signed_first(peer: Peer, case: SignedFirst, outcome: Outcome) -> None:
    runner_nonce = new_nonce()
    fields: dict[str, Any] = {"type": case.kind, "version": 1, "nonce": runner_nonce}
    if case.kind == "join":
        fields |= join_fields(FUZZ_JOIN_IDENTITY, "fuzz-join", physical_ip="192.0.2.20")
    if case.field != "mac":
        if case.value == DROP:
            fields.pop(case.field, None)
        else:
            fields[case.field] = case.value
    nonce = fields.get("nonce")
    # A nonce UTF-8 cannot carry (a lone surrogate) cannot be signed by anyone, attacker included.
    signing_nonce = nonce if isinstance(nonce, str) and _encodable(nonce) else runner_nonce
    body = {
        **fields,
        "mac": compute_mac(TOKEN, fields, peer.hello["nonce"], signing_nonce, RUNNER_TO_HOST),
    }
    if case.field == "mac":
        if case.value == DROP:
            del body["mac"]
        else:
            body["mac"] = case.value
    line = json.dumps(body).encode()
    if case.repeat_key and body:
        key, value = next(iter(body.items()))
        line = line[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}".encode()
    peer.send(line + b"\n")
    peer.sock.shutdown(socket.SHUT_WR)
    lines = peer.lines()
    if lines and lines[0]["type"] in ("welcome", "status"):
        assert not (case.repeat_key and body) and case.field != "mac", (case, lines)
        channel = Channel(TOKEN, peer.hello["nonce"], signing_nonce, RUNNER_TO_HOST)
        for answer in lines:
            channel.check(answer)
        if lines[0]["type"] == "welcome":
            welcome = lines[0]
            outcome.welcomed[welcome["runner_id"]] = (
                fields["hostname"],
                welcome["runner_physical_ip"],
                welcome["vni"],
                welcome["subnet"],
            )
        return
    allowed = {"bad_request", "unsupported_version", "settings_mismatch", "frame_too_large"}
    if case.kind == "join":  # its identity enrolled in an earlier case, and is active
        allowed.add("already_enrolled")
    if case.field == "mac":
        allowed.add("auth_failed")
    outcome.codes.append(refused(lines, allowed))


FUZZ_JOIN_IDENTITY = uuid.UUID(int=0xF011).hex
FUZZ_IDENTITY = uuid.UUID(int=0xF022).hex
SESSION_KEYS: dict[int, str] = {}  # host port -> the runner key FUZZ_IDENTITY enrolled with


def _session(peer: Peer, port: int, case: Session, outcome: Outcome) -> None:
    key = mac_key(TOKEN, SESSION_KEYS.get(port))
    channel = Channel(key, peer.hello["nonce"], new_nonce(), RUNNER_TO_HOST)
    fields = {"type": "join", "version": 1, "nonce": channel.runner_nonce}
    fields |= join_fields(FUZZ_IDENTITY, "fuzz-session", physical_ip="192.0.2.30")
    peer.send(channel.seal(fields, sequenced=False))
    welcome = peer.line()
    assert welcome is not None and welcome["type"] == "welcome", welcome
    host = Channel(key, peer.hello["nonce"], channel.runner_nonce, RUNNER_TO_HOST)
    host.check(welcome)
    if "runner_key" in welcome:  # enrolled: everything after the welcome is keyed by it too
        SESSION_KEYS[port] = welcome["runner_key"]
        channel.enrol(TOKEN, welcome["runner_key"])
        host.enrol(TOKEN, welcome["runner_key"])
    runner_id = welcome["runner_id"]
    address = welcome["runner_physical_ip"]
    outcome.welcomed[runner_id] = ("fuzz-session", address, welcome["vni"], welcome["subnet"])
    if case.half_close:
        peer.sock.shutdown(socket.SHUT_WR)
        assert peer.lines() == []
        return
    last = 0
    for step in case.steps:
        message, accepted = _step_message(step, channel, last)
        peer.send(json.dumps(message).encode() + b"\n")
        answer = peer.line()
        if accepted:
            assert answer is not None and answer["type"] == "heartbeat_ack", answer
            host.check(answer)
            assert answer["runner_id"] == runner_id
            outcome.acks += 1
            last = message["seq"]
            continue
        outcome.codes.append(refused([answer, *peer.lines()], {"bad_request", "auth_failed"}))
        return


def _step_message(step: Step, channel: Channel, last: int) -> tuple[dict[str, Any], bool]:
    """The message for `step`, and whether a correct host must accept it."""
    seq = SEQS[step.seq](last)
    message: dict[str, Any] = {"type": step.kind, "seq": seq}
    if step.kind == "heartbeat":
        message |= {"observed": step.observed, "applied": step.applied}
    if step.mac != "missing":
        nonces = (channel.host_nonce, channel.runner_nonce)
        if step.mac == "other_session":
            nonces = (new_nonce(), channel.runner_nonce)
        direction = HOST_TO_RUNNER if step.mac == "reflected" else RUNNER_TO_HOST
        mac = compute_mac(channel.token, message, *nonces, direction)
        message["mac"] = mac if step.mac != "random" else new_nonce() * 2
    try:
        parse_message(message, (Heartbeat, Leave))
    except ProtocolError:
        return message, False
    fresh = isinstance(seq, int) and seq > last
    # a genuine leave would give the id back: the fuzzer only sends forged ones
    if step.kind == "leave" and step.mac == "good" and fresh:
        message["mac"] = new_nonce() * 2
    return message, step.kind == "heartbeat" and step.mac == "good" and fresh
