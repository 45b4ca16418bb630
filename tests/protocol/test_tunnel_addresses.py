"""The `physical_ip` a runner joins with must be an address a tunnel can send to.

The schema refuses what no tunnel can use anywhere; the host refuses at admission what its own
plan rules out (the overlay network, and loopback when it builds tunnels). A refused join
changes no record and builds nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from krnet.core.protocol.messages import Join
from krnet.core.protocol.parse import parse_message
from krnet.errors import ProtocolError
from tests.protocol.peers import JOIN_MESSAGE, StartHost, join, join_once

UNUSABLE = ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.2.3", "169.254.1.1", "240.0.0.1"]


@pytest.mark.parametrize("address", UNUSABLE)
def test_the_schema_refuses_addresses_no_tunnel_can_use(address: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message({**JOIN_MESSAGE, "physical_ip": address}, (Join,))
    assert caught.value.code == "bad_request"
    assert "physical_ip" in str(caught.value)


@pytest.mark.parametrize("address", ["192.0.2.11", "10.200.0.0", "127.0.0.1", "172.16.5.4"])
def test_the_schema_accepts_unicast_addresses(address: str) -> None:
    parsed = parse_message({**JOIN_MESSAGE, "physical_ip": address}, (Join,))
    assert isinstance(parsed, Join) and parsed.physical_ip == address


async def refused_join(start_host: StartHost, physical_ip: str, **settings: Any) -> str:
    host = await start_host(**settings)
    with pytest.raises(ProtocolError) as caught:
        await join(host.port, physical_ip=physical_ip)
    assert caught.value.code == "bad_request"
    assert host.store.runners() == []
    assert [call for call in host.dataplane.calls if call[0] == "runner_up"] == []
    [event] = [event for event in host.store.events() if event.kind == "refused"]
    assert physical_ip in event.message
    return str(caught.value)


async def test_an_address_inside_the_overlay_is_refused(start_host: StartHost) -> None:
    message = await refused_join(start_host, "10.3.0.5")
    assert "inside the overlay network 10.0.0.0/8" in message
    assert "runner_address" in message


async def test_loopback_is_refused_when_the_host_builds_tunnels(start_host: StartHost) -> None:
    message = await refused_join(start_host, "127.0.0.1", overlay_enabled=True)
    assert "loopback" in message


async def test_loopback_joins_with_the_overlay_off(start_host: StartHost) -> None:
    host = await start_host(overlay_enabled=False)
    assert (await join_once(host.port, physical_ip="127.0.0.1")).runner_id == 1
