"""Authentication: the MAC binds the token, both nonces and the direction; seq refuses replays."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from krnet.core.protocol.channel import (
    HOST_TO_RUNNER,
    RUNNER_TO_HOST,
    Channel,
    compute_mac,
    mac_key,
)
from krnet.core.protocol.framing import canonical_json
from krnet.core.protocol.messages import Error
from krnet.core.protocol.parse import MESSAGES, parse_message
from krnet.errors import ProtocolError

TOKEN = "3f9c2a7e5b1d4c8a9e6f0b2d7c4a1e5f8b3d6c9a2e7f4b1d8c5a0e3f6b9c2d7a"
HOST_NONCE = "9b1e6f2a4c8d0e3f5a7b9c1d2e4f6a8b"
RUNNER_NONCE = "4d7a1c9e3b5f8a2d6c0e4b7f1a3d5c9e"


def pair(token_runner: str = TOKEN, token_host: str = TOKEN) -> tuple[Channel, Channel]:
    runner = Channel(token_runner, HOST_NONCE, RUNNER_NONCE, RUNNER_TO_HOST)
    host = Channel(token_host, HOST_NONCE, RUNNER_NONCE, HOST_TO_RUNNER)
    return runner, host


def unwrap(line: bytes) -> dict[str, object]:
    return json.loads(line)


def refused(channel: Channel, obj: dict[str, object], sequenced: bool = True) -> str:
    with pytest.raises(ProtocolError) as caught:
        channel.check(obj, sequenced=sequenced)
    assert caught.value.code == "auth_failed"
    return str(caught.value)


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == b'{"a":[1,"\\u00e9"],"b":1}'


def test_documented_join_vector() -> None:
    """The example in docs/protocol.md, so other implementations can check theirs."""
    join = {
        "type": "join",
        "version": 1,
        "nonce": RUNNER_NONCE,
        "identity": "0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c",
        "hostname": "runner-a",
        "physical_ip": "192.0.2.11",
        "vxlan_id": 100,
        "vxlan_port": 4789,
        "mtu": 1450,
    }
    mac = compute_mac(TOKEN, join, HOST_NONCE, RUNNER_NONCE, RUNNER_TO_HOST)
    assert mac == "ecadfa389adc0f9bfc21d2abd7fb6050f136914fcd306851eb9d063889203bbe"


def test_sealed_messages_verify_in_order() -> None:
    runner, host = pair()
    first = unwrap(runner.seal({"type": "heartbeat"}))
    second = unwrap(runner.seal({"type": "heartbeat"}))
    assert (first["seq"], second["seq"]) == (1, 2)
    host.check(first)
    host.check(second)
    assert host.received_seq == 2


def test_unsequenced_join_has_no_seq() -> None:
    runner, host = pair()
    join = unwrap(runner.seal({"type": "join"}, sequenced=False))
    assert "seq" not in join
    host.check(join, sequenced=False)


def test_wrong_token_is_refused() -> None:
    runner, host = pair(token_runner="not-the-token")
    message = refused(host, unwrap(runner.seal({"type": "join"}, sequenced=False)), False)
    assert "join token" in message


def test_message_from_another_session_is_refused() -> None:
    runner, _ = pair()
    join = unwrap(runner.seal({"type": "join"}, sequenced=False))
    other_session = Channel(TOKEN, "0" * 32, RUNNER_NONCE, HOST_TO_RUNNER)
    refused(other_session, join, sequenced=False)


def test_replay_inside_a_session_is_refused() -> None:
    runner, host = pair()
    heartbeat = unwrap(runner.seal({"type": "heartbeat"}))
    host.check(heartbeat)
    assert "replayed" in refused(host, heartbeat)


def test_reflected_message_is_refused() -> None:
    """A host message sent back to the host (or a runner's to the runner) fails: direction."""
    runner, host = pair()
    welcome = unwrap(host.seal({"type": "welcome"}))
    refused(host, welcome)
    runner.check(welcome)


def test_tampered_field_is_refused() -> None:
    runner, host = pair()
    heartbeat = unwrap(runner.seal({"type": "heartbeat", "observed": {"mtu": 1450}}))
    heartbeat["observed"] = {"mtu": 9000}
    refused(host, heartbeat)


def test_missing_mac_is_refused() -> None:
    _, host = pair()
    refused(host, {"type": "heartbeat", "seq": 1})


def documented_blocks(language: str) -> list[list[dict[str, object]]]:
    """The JSON lines of each ```language block of docs/protocol.md."""
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    return [[json.loads(line) for line in block.splitlines() if line] for block in blocks]


HOST_SENDS = {
    "hello",
    "welcome",
    "heartbeat_ack",
    "peers",
    "bye",
    "status",
    "snapshot",
    "released",
    "error",
}


def test_documented_sessions_parse_and_verify() -> None:
    """The enrolment, the same runner's next join (signed with its key), the same in direct
    mode (a peers push), refused after its id was reclaimed and enrolled afresh after a release
    (both signed with its old key), a status session, a release session and a status session
    with a snapshot."""
    sessions = documented_blocks("jsonl")
    assert len(sessions) == 8
    keys: list[str] = []  # runner keys issued by the documented welcomes, in order
    for session in sessions:
        hello, first, *rest = session
        key = keys[-1] if first["type"] == "join" and keys else None
        nonces = (str(hello["nonce"]), str(first["nonce"]))
        host = Channel(mac_key(TOKEN, key), *nonces, HOST_TO_RUNNER)
        runner = Channel(mac_key(TOKEN, key), *nonces, RUNNER_TO_HOST)
        host.check(first, sequenced=False)
        for message in session:
            parse_message(message, tuple(MESSAGES.values()))
        for message in rest:
            (runner if message["type"] in HOST_SENDS else host).check(message)
            if message["type"] == "welcome" and "runner_key" in message:
                keys.append(str(message["runner_key"]))
                host.enrol(TOKEN, keys[-1])
                runner.enrol(TOKEN, keys[-1])
    assert len(keys) == 2


def test_documented_errors_parse() -> None:
    [errors] = documented_blocks("json")
    assert all(isinstance(parse_message(error, (Error,)), Error) for error in errors)
