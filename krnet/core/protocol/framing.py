"""Line framing: one JSON object per line, bounded, strict; and cutting big answers into lines.

docs/protocol.md "Transport and framing" is the specification. Nothing here opens a socket:
`read_frame` takes any asyncio.StreamReader, so tests feed it bytes directly.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import NoReturn, TypeAlias

from pydantic import JsonValue

from krnet.errors import ProtocolError

MAX_LINE = 65_536  # bytes a line may hold, newline not counted

JsonObject: TypeAlias = dict[str, JsonValue]


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, JsonValue]]) -> JsonObject:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object repeats a key")
    return result


def decode_frame(line: bytes) -> JsonObject:
    """One line (without its newline) to a JSON object, or ProtocolError(bad_request)."""
    if len(line) > MAX_LINE:
        raise ProtocolError("frame_too_large", f"line of {len(line)} bytes exceeds {MAX_LINE}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_request", f"line is not valid UTF-8 ({exc.reason})") from None
    try:
        value: JsonValue = json.loads(
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


def encode_frame(obj: Mapping[str, JsonValue]) -> bytes:
    """A JSON object to one wire line; refuses to produce a line the peer would reject."""
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    if len(line) > MAX_LINE:
        raise ProtocolError(
            "frame_too_large", f"{obj.get('type')} message of {len(line)} bytes exceeds {MAX_LINE}"
        )
    return line + b"\n"


async def read_frame(reader: asyncio.StreamReader) -> JsonObject | None:
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


def canonical_json(value: Mapping[str, JsonValue] | JsonValue) -> bytes:
    """The bytes a MAC covers and a size limit counts: sorted keys, no whitespace, ASCII only."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def split_status(status: Mapping[str, JsonValue], room: int = MAX_LINE - 1024) -> list[JsonObject]:
    """Cut a status object into parts whose `runners` lists each fit one line.

    Every part carries all the other fields; concatenating the parts' runners gives back
    the whole list. `room` leaves space for the envelope (type, more, seq, mac).
    """
    runners = status.get("runners")
    head = {key: value for key, value in status.items() if key != "runners"}
    parts: list[JsonObject] = []
    chunk: list[JsonValue] = []
    size = len(canonical_json({**head, "runners": []}))
    for runner in runners if isinstance(runners, list) else []:
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
