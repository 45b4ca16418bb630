"""Reading a peer's line as a message: the registry of message types by `type`, validation
with errors a log line can hold, and turning a peer's `error` into ProtocolError.

The models themselves are krnet.core.protocol.messages; docs/protocol.md is the specification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import JsonValue, ValidationError

from krnet.core.model.text import printable
from krnet.core.protocol.framing import encode_frame
from krnet.core.protocol.messages import (
    MAX_ERROR_TEXT,
    PROTOCOL_VERSION,
    Bye,
    Error,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Join,
    Leave,
    Message,
    Peers,
    Released,
    ReleaseRequest,
    Snapshot,
    Status,
    StatusRequest,
    Welcome,
)
from krnet.errors import ErrorCode, ProtocolError

MESSAGES: dict[str, type[Message]] = {  # by the `type` field
    "hello": Hello,
    "join": Join,
    "status_request": StatusRequest,
    "release_request": ReleaseRequest,
    "released": Released,
    "welcome": Welcome,
    "heartbeat": Heartbeat,
    "heartbeat_ack": HeartbeatAck,
    "peers": Peers,
    "leave": Leave,
    "bye": Bye,
    "status": Status,
    "snapshot": Snapshot,
    "error": Error,
}


KIND_OF = {model: kind for kind, model in MESSAGES.items()}


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


def parse_message(obj: Mapping[str, JsonValue], expected: Sequence[type[Message]]) -> Message:
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


def raise_if_error(message: Message, peer: str, *, authenticated: bool = False) -> None:
    """Turn a peer's `error` message into ProtocolError carrying its code.

    Unless its MAC verified (`authenticated`), anyone who answers the connection can write an
    `error`, so its text is quoted, marked as unauthenticated and escaped either way (no forged
    log lines, no terminal escapes).
    """
    if isinstance(message, Error):
        text = printable(message.message)
        said = "its message" if authenticated else "its unauthenticated message"
        raise ProtocolError(
            message.code,
            f'{peer} refused ({message.code}); {said}: "{text}"',
            authenticated=authenticated,
        )


def error_frame(code: ErrorCode, message: str) -> bytes:
    """The unsigned `error` line refusing a peer (the message cut to the length allowed)."""
    text = message[:MAX_ERROR_TEXT]
    return encode_frame(Error(type="error", code=code, message=text).model_dump(exclude_none=True))
