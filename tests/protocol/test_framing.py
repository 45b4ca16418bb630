"""Framing and message schemas: every malformed line becomes a ProtocolError with its code."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from krnet.core.protocol import messages as protocol
from krnet.core.protocol.framing import (
    MAX_LINE,
    decode_frame,
    encode_frame,
    read_frame,
    split_status,
)
from krnet.core.protocol.messages import Heartbeat, Join, Status, StatusRequest
from krnet.core.protocol.parse import parse_message
from krnet.errors import ProtocolError
from tests.protocol.peers import JOIN_MESSAGE as JOIN


def read_all(data: bytes) -> list[dict[str, object] | None]:
    """Feed `data` to a StreamReader with the protocol's limit and read frames to the end."""

    async def run() -> list[dict[str, object] | None]:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        reader.feed_data(data)
        reader.feed_eof()
        frames: list[dict[str, object] | None] = []
        while (frame := await read_frame(reader)) is not None:
            frames.append(frame)
        return frames

    return asyncio.run(run())


def code_of(call: object, *args: object) -> str:
    with pytest.raises(ProtocolError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.code


def padded_line(length: int) -> bytes:
    """A valid JSON object line of exactly `length` bytes."""
    base = b'{"type":"x","pad":""}'
    return base[:-2] + b"p" * (length - len(base)) + b'"}'


def test_round_trip() -> None:
    assert read_all(encode_frame(JOIN) + encode_frame({"type": "x"})) == [JOIN, {"type": "x"}]


def test_line_of_exactly_the_limit_is_accepted() -> None:
    line = padded_line(MAX_LINE)
    assert len(line) == MAX_LINE
    assert read_all(line + b"\n")[0]["type"] == "x"  # type: ignore[index]


def test_line_one_byte_over_the_limit_is_refused() -> None:
    assert code_of(read_all, padded_line(MAX_LINE + 1) + b"\n") == "frame_too_large"


def test_endless_line_is_refused_without_a_newline() -> None:
    assert code_of(read_all, b"x" * (MAX_LINE * 3)) == "frame_too_large"


def test_clean_end_of_stream_and_end_mid_line() -> None:
    assert read_all(b"") == []
    assert code_of(read_all, b'{"type":"jo') == "bad_request"


@pytest.mark.parametrize(
    "line",
    [
        b"\xff\xfe{}",
        b'{"type":"join"',
        b"[1,2,3]",
        b'"join"',
        b"42",
        b"null",
        b'{"type":NaN}',
        b'{"x":1e400}',
        b'{"type":"a","type":"b"}',
        b"[" * 60_000,
        b"",
    ],
    ids=lambda line: repr(line[:16]),
)
def test_bad_lines_are_bad_requests(line: bytes) -> None:
    assert code_of(decode_frame, line) == "bad_request"


def test_encode_refuses_a_line_the_peer_would_reject() -> None:
    assert code_of(encode_frame, {"type": "x", "pad": "p" * MAX_LINE}) == "frame_too_large"


def test_valid_join_parses() -> None:
    message = parse_message(JOIN, (Join, StatusRequest))
    assert isinstance(message, Join)
    assert message.mtu == 1450


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"type": None}, "bad_request"),
        ({"type": "shout"}, "bad_request"),
        ({"type": "heartbeat"}, "bad_request"),
        ({"mtu": "1450"}, "bad_request"),
        ({"mtu": True}, "bad_request"),
        ({"mtu": 14.5}, "bad_request"),
        ({"mtu": 10}, "bad_request"),
        ({"vxlan_port": 70_000}, "bad_request"),
        ({"physical_ip": "192.0.2.300"}, "bad_request"),
        ({"nonce": "XYZ"}, "bad_request"),
        ({"hostname": "two words"}, "bad_request"),
        ({"extra": 1}, "bad_request"),
        ({"version": 2}, "unsupported_version"),
    ],
)
def test_bad_messages(change: dict[str, object], code: str) -> None:
    message = {**JOIN, **change}
    assert code_of(parse_message, message, (Join, StatusRequest)) == code


def test_missing_field_is_named() -> None:
    message = {key: value for key, value in JOIN.items() if key != "hostname"}
    with pytest.raises(ProtocolError) as caught:
        parse_message(message, (Join,))
    assert "hostname" in str(caught.value)


def test_heartbeat_with_observed_state_parses() -> None:
    message = {
        "type": "heartbeat",
        "seq": 2,
        "applied": {"runner_id": 1, "vni": 101, "subnet": "10.1.0.0/16", "mtu": 1450},
        "observed": {"vxlan0": {"mtu": 1450, "up": True}},
        "mac": "b" * 64,
    }
    assert isinstance(parse_message(message, (Heartbeat,)), Heartbeat)


def test_split_status_fits_every_part_in_one_line() -> None:
    runners = [
        {"runner_id": i, "hostname": f"{'h' * 200}-{i}", "mismatches": ["x" * 100]}
        for i in range(1, 256)
    ]
    status = {"mode": "host", "total": 255, "runners": runners}
    parts = split_status(status)
    assert len(parts) > 1
    merged = []
    for part in parts:
        assert part["total"] == 255
        envelope = {"type": "status", "status": part, "more": True, "seq": 2**53, "mac": "c" * 64}
        assert len(encode_frame(envelope)) <= MAX_LINE + 1
        Status.model_validate(json.loads(encode_frame(envelope)))
        merged += part["runners"]
    assert merged == runners


def test_split_status_without_runners_is_one_part() -> None:
    assert split_status({"mode": "host", "runners": []}) == [{"mode": "host", "runners": []}]


def test_every_error_code_is_documented() -> None:
    codes = protocol.ErrorCode.__args__  # type: ignore[attr-defined]
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert all(f"`{code}`" in text for code in codes)
