"""The join protocol, pure: line framing, message schemas, and the HMAC that binds both nonces.

docs/protocol.md is the specification; this module is its only implementation. Nothing here
opens a socket: `read_frame` takes any asyncio.StreamReader, so tests feed it bytes directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationError,
)

from krnet.errors import ProtocolError

PROTOCOL_VERSION = 1
MAX_LINE = 65_536  # bytes a line may hold, newline not counted
MAX_OBSERVED = 16_384  # bytes of a heartbeat's `observed` as canonical JSON: a status line holds it
RUNNER_TO_HOST = "krnet runner->host"
HOST_TO_RUNNER = "krnet host->runner"

ErrorCode: TypeAlias = Literal[
    "bad_request",
    "frame_too_large",
    "unsupported_version",
    "auth_failed",
    "settings_mismatch",
    "pool_exhausted",
    "internal",
    "timeout",
    "busy",
]


def _ipv4(value: str) -> str:
    IPv4Address(value)
    return value


def _ipv4_network(value: str) -> str:
    IPv4Network(value, strict=True)
    return value


Nonce = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Mac = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int, Field(ge=1, le=2**53)]
RunnerId = Annotated[int, Field(ge=1, le=255)]
Vni = Annotated[int, Field(ge=0, le=2**24 - 1)]
Port = Annotated[int, Field(ge=1, le=65_535)]
Mtu = Annotated[int, Field(ge=68, le=65_535)]
Ipv4 = Annotated[str, AfterValidator(_ipv4)]
Ipv4Cidr = Annotated[str, AfterValidator(_ipv4_network)]
Identity = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Hostname = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,253}$")]
LinkName = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,15}$")]


class Message(BaseModel):
    """A wire object: strict types, no unknown fields, immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Hello(Message):
    type: Literal["hello"]
    version: int
    nonce: Nonce
    server: Annotated[str, StringConstraints(max_length=200)]


class Join(Message):
    type: Literal["join"]
    version: int
    nonce: Nonce
    identity: Identity
    hostname: Hostname
    physical_ip: Ipv4
    vxlan_id: Vni
    vxlan_port: Port
    mtu: Mtu
    mac: Mac


class StatusRequest(Message):
    type: Literal["status_request"]
    version: int
    nonce: Nonce
    snapshot: bool = False  # also send the node's whole snapshot after the status
    mac: Mac


class Allocation(Message):
    """What a runner needs to build its side of the tunnel (the payload of `welcome`)."""

    runner_id: RunnerId
    vni: Vni
    subnet: Ipv4Cidr
    gateway: Ipv4
    host_overlay_ip: Ipv4
    host_ip_on_subnet: Ipv4
    host_physical_ip: Ipv4
    runner_physical_ip: Ipv4
    overlay_cidr: Ipv4Cidr
    bridge_name: LinkName
    mtu: Mtu
    vxlan_port: Port
    vxlan_id: Vni
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)]


ALLOCATION_FIELDS = tuple(Allocation.model_fields)


class Welcome(Allocation):
    type: Literal["welcome"]
    seq: Seq
    mac: Mac

    def allocation(self) -> Allocation:
        return Allocation.model_validate(self.model_dump(include=set(ALLOCATION_FIELDS)))


class HeartbeatAck(Welcome):
    """The host's answer to a heartbeat: the allocation the runner should have applied."""

    type: Literal["heartbeat_ack"]  # type: ignore[assignment]


class Applied(Message):
    """What a runner reports it has configured."""

    runner_id: RunnerId
    vni: Vni
    subnet: Ipv4Cidr
    mtu: Mtu


def _bounded_observed(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    size = len(canonical_json(value))
    if size > MAX_OBSERVED:
        raise ValueError(f"{size} bytes as canonical JSON, at most {MAX_OBSERVED}")
    return value


class Heartbeat(Message):
    type: Literal["heartbeat"]
    seq: Seq
    applied: Applied | None
    observed: Annotated[dict[str, JsonValue], AfterValidator(_bounded_observed)]
    mac: Mac


class Leave(Message):
    type: Literal["leave"]
    seq: Seq
    mac: Mac


class Bye(Message):
    type: Literal["bye"]
    seq: Seq
    mac: Mac


class Status(Message):
    """One part of a status answer; `more` says another part follows (runners are split)."""

    type: Literal["status"]
    status: dict[str, JsonValue]
    more: bool
    seq: Seq
    mac: Mac


class Snapshot(Message):
    """One slice of the host's node snapshot (snapshot_json as canonical JSON text)."""

    type: Literal["snapshot"]
    data: str
    more: bool
    seq: Seq
    mac: Mac


class Error(Message):
    type: Literal["error"]
    code: ErrorCode
    message: Annotated[str, StringConstraints(max_length=2000)]


MESSAGES: dict[str, type[Message]] = {
    "hello": Hello,
    "join": Join,
    "status_request": StatusRequest,
    "welcome": Welcome,
    "heartbeat": Heartbeat,
    "heartbeat_ack": HeartbeatAck,
    "leave": Leave,
    "bye": Bye,
    "status": Status,
    "snapshot": Snapshot,
    "error": Error,
}


def new_nonce() -> str:
    """A fresh 128-bit nonce, 32 lowercase hex digits."""
    return secrets.token_hex(16)


def applied_of(allocation: Allocation) -> Applied:
    """The `applied` summary a runner reports for an allocation it configured."""
    return Applied(
        runner_id=allocation.runner_id,
        vni=allocation.vni,
        subnet=allocation.subnet,
        mtu=allocation.mtu,
    )


# --- framing -------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object repeats a key")
    return result


def decode_frame(line: bytes) -> dict[str, Any]:
    """One line (without its newline) to a JSON object, or ProtocolError(bad_request)."""
    if len(line) > MAX_LINE:
        raise ProtocolError("frame_too_large", f"line of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_request", f"line is not valid UTF-8 ({exc.reason})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_request", f"line is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_request", f"expected a JSON object, got {type(value).__name__}")
    return value


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    """A JSON object to one wire line; refuses to produce a line the peer would reject."""
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    if len(line) > MAX_LINE:
        raise ProtocolError(
            "frame_too_large", f"{obj.get('type')} message of {len(line)} bytes exceeds {MAX_LINE}"
        )
    return line + b"\n"


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next object on the stream, None at a clean end of stream.

    The reader must be created with limit=MAX_LINE: readuntil then raises LimitOverrunError
    as soon as a line outgrows the limit, so at most about twice the limit is ever buffered.
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError(
            "frame_too_large", f"line exceeds {MAX_LINE} bytes; the protocol allows {MAX_LINE}"
        ) from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError(
            "bad_request", f"connection closed in the middle of a line ({len(exc.partial)} bytes)"
        ) from None
    return decode_frame(line[:-1])


def _printable(text: str, limit: int = 120) -> str:
    """Peer-chosen text (a field name) made safe for one log line: escaped and cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return cut.encode("unicode_escape").decode("ascii")


def _summarize(exc: ValidationError, kind: str) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        where = _printable(".".join(str(item) for item in error["loc"])) or kind
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"invalid {kind} message: " + "; ".join(parts) + suffix


def parse_message(obj: Mapping[str, Any], expected: Sequence[type[Message]]) -> Message:
    """Validate a decoded object as one of the `expected` message types."""
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_request", "message has no string 'type' field")
    model = MESSAGES.get(kind)
    if model is None:
        raise ProtocolError("bad_request", f"unknown message type {kind[:40]!r}")
    if model not in expected:
        names = " or ".join(sorted(name for name, m in MESSAGES.items() if m in expected))
        raise ProtocolError("bad_request", f"unexpected {kind!r} message here: expected {names}")
    version = obj.get("version", PROTOCOL_VERSION)
    if "version" in model.model_fields and type(version) is int and version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"peer speaks protocol version {version}, this krnet speaks {PROTOCOL_VERSION}: "
            "run the same krnet release on the host and every runner",
        )
    try:
        return model.model_validate(dict(obj))
    except ValidationError as exc:
        raise ProtocolError("bad_request", _summarize(exc, kind)) from None


def raise_if_error(message: Message, peer: str) -> None:
    """Turn a peer's `error` message into ProtocolError carrying its code."""
    if isinstance(message, Error):
        raise ProtocolError(message.code, f"{peer} refused ({message.code}): {message.message}")


def error_frame(code: ErrorCode, message: str) -> bytes:
    return encode_frame({"type": "error", "code": code, "message": message[:2000]})


# --- authentication ------------------------------------------------------------------------


def canonical_json(fields: Mapping[str, Any]) -> bytes:
    """The bytes a MAC covers: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def compute_mac(
    token: str, fields: Mapping[str, Any], host_nonce: str, runner_nonce: str, direction: str
) -> str:
    """HMAC-SHA256 keyed by the join token over the message (without `mac`) and both nonces."""
    body = {key: value for key, value in fields.items() if key != "mac"}
    text = b"\n".join(
        [canonical_json(body), host_nonce.encode(), runner_nonce.encode(), direction.encode()]
    )
    return hmac.new(token.encode(), text, hashlib.sha256).hexdigest()


@dataclass
class Channel:
    """One authenticated session: signs what we send, checks MAC and seq of what we receive."""

    token: str
    host_nonce: str
    runner_nonce: str
    sending: str  # RUNNER_TO_HOST or HOST_TO_RUNNER
    sent_seq: int = 0
    received_seq: int = 0

    @property
    def receiving(self) -> str:
        return HOST_TO_RUNNER if self.sending == RUNNER_TO_HOST else RUNNER_TO_HOST

    def seal(self, fields: Mapping[str, Any], *, sequenced: bool = True) -> bytes:
        """One signed line; sequenced messages get the next `seq`."""
        body = dict(fields)
        if sequenced:
            self.sent_seq += 1
            body["seq"] = self.sent_seq
        body["mac"] = compute_mac(
            self.token, body, self.host_nonce, self.runner_nonce, self.sending
        )
        return encode_frame(body)

    def check(self, obj: Mapping[str, Any], *, sequenced: bool = True) -> None:
        """Refuse (auth_failed) a message with a wrong MAC or a seq not above the last one."""
        expected = compute_mac(self.token, obj, self.host_nonce, self.runner_nonce, self.receiving)
        if not hmac.compare_digest(expected, str(obj.get("mac", ""))):
            raise ProtocolError(
                "auth_failed",
                "message authentication failed: the peer does not hold this cluster's join "
                "token (compare join_token / join_token_file / KRNET_JOIN_TOKEN with "
                "`krnet token` on the host)",
            )
        if sequenced:
            seq = obj["seq"]
            if seq <= self.received_seq:
                raise ProtocolError(
                    "auth_failed", f"replayed message: seq {seq} after {self.received_seq}"
                )
            self.received_seq = seq


def split_status(status: Mapping[str, Any], room: int = MAX_LINE - 1024) -> list[dict[str, Any]]:
    """Cut a status object into parts whose `runners` lists each fit one line.

    Every part carries all the other fields; concatenating the parts' runners gives back
    the whole list. `room` leaves space for the envelope (type, more, seq, mac).
    """
    runners = list(status.get("runners", []))
    head = {key: value for key, value in status.items() if key != "runners"}
    parts: list[dict[str, Any]] = []
    chunk: list[Any] = []
    size = len(canonical_json({**head, "runners": []}))
    for runner in runners:
        cost = len(canonical_json(runner)) + 1
        if chunk and size + cost > room:
            parts.append({**head, "runners": chunk})
            chunk, size = [], len(canonical_json({**head, "runners": []}))
        chunk.append(runner)
        size += cost
    parts.append({**head, "runners": chunk})
    return parts


def split_snapshot(text: str, room: int = (MAX_LINE - 1024) // 2) -> list[str]:
    """Cut a snapshot's JSON text into slices that each fit one `snapshot` line.

    The text is canonical JSON, printable ASCII only, so a character costs at most two bytes
    inside a JSON string (`"` and `\\` are escaped): a slice of `room` characters takes at most
    twice `room` bytes, and the default leaves 1 KiB of the line for the envelope.
    """
    return [text[start : start + room] for start in range(0, len(text), room)] or [""]
