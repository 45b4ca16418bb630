"""Fuzzing the frame reader and the message parser: any input gives a frame or ProtocolError."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from krnet.core.protocol.framing import MAX_LINE, decode_frame, encode_frame, read_frame
from krnet.core.protocol.messages import Message
from krnet.core.protocol.parse import MESSAGES, parse_message
from krnet.errors import ProtocolError
from tests.protocol.peers import JOIN_MESSAGE as VALID_JOIN

ALL_TYPES = tuple(MESSAGES.values())

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def drain(data: bytes) -> list[dict[str, Any]]:
    """Every frame in `data`, stopping at the first ProtocolError (as the host does)."""

    async def run() -> list[dict[str, Any]]:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        reader.feed_data(data)
        reader.feed_eof()
        frames = []
        try:
            while (frame := await read_frame(reader)) is not None:
                frames.append(frame)
        except ProtocolError:
            pass
        return frames

    return asyncio.run(run())


@settings(max_examples=300)
@given(st.binary(max_size=4096))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    for frame in drain(data):
        assert isinstance(frame, dict)


@settings(max_examples=200)
@given(st.lists(st.dictionaries(st.text(max_size=12), json_values, max_size=6), max_size=4))
def test_encoded_objects_read_back_unchanged(objects: list[dict[str, Any]]) -> None:
    data = b"".join(encode_frame(obj) for obj in objects)
    assert drain(data) == objects


@settings(max_examples=300)
@given(json_values)
def test_any_json_value_parses_or_is_refused(value: Any) -> None:
    line = json.dumps(value).encode()
    try:
        obj = decode_frame(line)
        message = parse_message(obj, ALL_TYPES)
    except ProtocolError as exc:
        assert exc.code in {"bad_request", "unsupported_version"}
    else:
        assert isinstance(message, Message)


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(VALID_JOIN)),
    json_values | st.just(None),
    st.booleans(),
)
def test_mutated_join_parses_or_is_refused(field: str, value: Any, drop: bool) -> None:
    message = dict(VALID_JOIN)
    if drop:
        del message[field]
    else:
        message[field] = value
    try:
        parsed = parse_message(message, ALL_TYPES)
    except ProtocolError as exc:
        assert exc.code in {"bad_request", "unsupported_version"}
    else:
        assert parsed.model_dump() == message
