"""Messages as models both ways: what krnet sends is the line the peer's model accepts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from krnet.core.model.records import JoinRequest
from krnet.core.protocol.channel import HOST_TO_RUNNER, RUNNER_TO_HOST, Channel
from krnet.core.protocol.messages import (
    JOIN_FIELDS,
    PROTOCOL_VERSION,
    Allocation,
    Bye,
    Error,
    Heartbeat,
    Join,
    Peers,
    Status,
    Welcome,
    join_fields,
)
from krnet.core.protocol.parse import error_frame, parse_message, raise_if_error
from krnet.errors import ProtocolError
from tests.protocol.peers import IMPOSTOR_ALLOCATION, JOIN_MESSAGE

HOST_NONCE = "9b1e6f2a4c8d0e3f5a7b9c1d2e4f6a8b"
RUNNER_NONCE = "4d7a1c9e3b5f8a2d6c0e4b7f1a3d5c9e"
TOKEN = "3f9c2a7e5b1d4c8a9e6f0b2d7c4a1e5f8b3d6c9a2e7f4b1d8c5a0e3f6b9c2d7a"
REQUEST = JoinRequest("0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c", "runner-a", "192.0.2.11", 100, 4789, 1450)


def channels() -> tuple[Channel, Channel]:
    runner = Channel(TOKEN, HOST_NONCE, RUNNER_NONCE, RUNNER_TO_HOST)
    return runner, Channel(TOKEN, HOST_NONCE, RUNNER_NONCE, HOST_TO_RUNNER)


def test_every_field_of_the_records_join_request_travels_in_join() -> None:
    assert {field.name for field in dataclasses.fields(JoinRequest)} == JOIN_FIELDS
    assert set(Join.model_fields) >= JOIN_FIELDS


def test_a_join_made_from_a_request_gives_the_request_back() -> None:
    runner, host = channels()
    first = {"version": PROTOCOL_VERSION, "nonce": RUNNER_NONCE, **join_fields(REQUEST)}
    obj = json.loads(runner.sign(Join, **first))
    host.check(obj, sequenced=False)
    join = parse_message(obj, (Join,))
    assert isinstance(join, Join) and join.request() == REQUEST


def test_the_documented_join_is_what_sign_sends() -> None:
    """Byte for byte the line of docs/protocol.md: type first, the fields in order, then mac."""
    runner, _ = channels()
    first = {"version": PROTOCOL_VERSION, "nonce": RUNNER_NONCE, **join_fields(REQUEST)}
    line = runner.sign(Join, **first)
    assert line == (
        b'{"type":"join","version":1,"nonce":"4d7a1c9e3b5f8a2d6c0e4b7f1a3d5c9e",'
        b'"identity":"0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c","hostname":"runner-a",'
        b'"physical_ip":"192.0.2.11","vxlan_id":100,"vxlan_port":4789,"mtu":1450,'
        b'"mac":"ecadfa389adc0f9bfc21d2abd7fb6050f136914fcd306851eb9d063889203bbe"}\n'
    )


def test_sign_numbers_every_message_after_the_first() -> None:
    _, host = channels()
    status = json.loads(host.sign(Status, status={"mode": "host"}, more=False))
    bye = json.loads(host.sign(Bye))
    assert list(status) == ["type", "status", "more", "seq", "mac"]
    assert (status["seq"], bye["seq"]) == (1, 2)
    assert isinstance(parse_message(bye, (Bye,)), Bye)


def test_sign_refuses_a_message_the_peer_would_refuse() -> None:
    runner, _ = channels()
    with pytest.raises(ProtocolError) as caught:
        runner.sign(Heartbeat, applied=None, observed={"x": "y" * 20_000})
    assert caught.value.code == "internal" and "observed" in str(caught.value)
    assert runner.sent_seq == 1  # the seq is spent; nothing was written


def test_the_peers_join_fixture_parses_as_the_model() -> None:
    join = parse_message(JOIN_MESSAGE, (Join,))
    assert isinstance(join, Join) and join.request().hostname == "runner-1"


ALLOCATION = {**IMPOSTOR_ALLOCATION.model_dump(), "host_physical_ip": "192.0.2.1"}
PEERS = [
    {"runner_id": 1, "physical_ip": "192.0.2.11"},
    {"runner_id": 2, "physical_ip": "192.0.2.12"},
]


def test_a_hub_mode_allocation_is_the_seeds_field_for_field() -> None:
    hub = Allocation.model_validate(ALLOCATION)
    assert hub.overlay_mode == "hub" and hub.model_dump() == ALLOCATION
    direct = Allocation.model_validate({**ALLOCATION, "overlay_mode": "direct"})
    assert direct.model_dump() == {**ALLOCATION, "overlay_mode": "direct"}
    with pytest.raises(ValueError, match="overlay_mode"):
        Allocation.model_validate({**ALLOCATION, "overlay_mode": "mesh"})


def test_a_direct_welcome_carries_the_peer_table_and_a_hub_welcome_none() -> None:
    runner, host = channels()
    line = host.sign(Welcome, **ALLOCATION, overlay_mode="direct", peers=PEERS, peers_generation=3)
    obj = json.loads(line)
    runner.check(obj)
    welcome = parse_message(obj, (Welcome,))
    assert isinstance(welcome, Welcome) and welcome.allocation().overlay_mode == "direct"
    assert [peer.runner_id for peer in welcome.peers or []] == [1, 2]
    for wrong in ({"peers": PEERS, "peers_generation": 1}, {"overlay_mode": "direct"}):
        with pytest.raises(ProtocolError, match="peers come with overlay_mode direct"):
            host.sign(Welcome, **ALLOCATION, **wrong)


def test_a_peers_push_is_signed_and_sequenced_like_every_host_message() -> None:
    runner, host = channels()
    host.sign(Bye)
    obj = json.loads(host.sign(Peers, generation=2, peers=PEERS))
    assert list(obj) == ["type", "generation", "peers", "seq", "mac"] and obj["seq"] == 2
    runner.check(obj)
    assert isinstance(parse_message(obj, (Peers,)), Peers)
    with pytest.raises(ProtocolError, match="message authentication failed"):
        runner.check({**obj, "peers": PEERS[:1]})


@pytest.mark.parametrize(
    ("peers", "problem"),
    [
        ([PEERS[0], PEERS[0]], "a runner id appears twice"),
        ([{"runner_id": 0, "physical_ip": "192.0.2.10"}], "greater than or equal to 1"),
        ([{"runner_id": 3, "physical_ip": "224.0.0.1"}], "not a unicast address"),
    ],
)
def test_a_bad_peer_table_is_refused_naming_the_entry(
    peers: list[dict[str, object]], problem: str
) -> None:
    obj = {"type": "peers", "generation": 1, "peers": peers, "seq": 1, "mac": "0" * 64}
    with pytest.raises(ProtocolError, match=problem):
        parse_message(obj, (Peers,))


def test_a_signed_error_carries_seq_and_mac_and_checks_on_the_runners_channel() -> None:
    runner, host = channels()
    obj = json.loads(host.sign(Error, code="pool_exhausted", message="all 1 runner ids are held"))
    assert list(obj) == ["type", "code", "message", "seq", "mac"]
    runner.check(obj)  # the host's session MAC: the host itself refused
    error = parse_message(obj, (Error,))
    with pytest.raises(ProtocolError) as caught:
        raise_if_error(error, "host", authenticated=True)
    assert caught.value.authenticated and caught.value.code == "pool_exhausted"
    assert "unauthenticated" not in str(caught.value)


def test_an_error_signed_by_half_is_bad_and_an_unsigned_one_stays_unauthenticated() -> None:
    with pytest.raises(ProtocolError, match="both seq and mac"):
        parse_message({"type": "error", "code": "busy", "message": "x", "seq": 1}, (Error,))
    unsigned = parse_message(json.loads(error_frame("pool_exhausted", "forged")), (Error,))
    with pytest.raises(ProtocolError) as caught:
        raise_if_error(unsigned, "host")
    assert not caught.value.authenticated
    assert "its unauthenticated message" in str(caught.value)
