"""The runner follows its host's mode and peer table: every peer but itself, applied once."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network

from krnet.core.control.agent import own_allocation
from krnet.core.control.peer_follow import PeerFollower
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.peers import VTEP_NAME, Peer
from krnet.core.model.settings import Settings
from krnet.core.model.welcome import Route
from krnet.core.protocol.messages import Allocation, PeerEntry
from tests.protocol.test_messages import ALLOCATION

TABLE = [
    PeerEntry(runner_id=1, physical_ip="192.0.2.11"),
    PeerEntry(runner_id=2, physical_ip="192.0.2.12"),
]


def test_direct_mode_applies_every_peer_but_this_runner_once_per_change() -> None:
    plane = NullRunnerDataPlane()
    follower = PeerFollower(plane)

    async def scenario() -> None:
        await follower.follow("direct", 1, TABLE, 1)
        await follower.follow("direct", 1, TABLE, 1)  # the same table again: a welcome after a drop
        await follower.follow("direct", 1, TABLE[:1], 2)  # runner 2 left

    asyncio.run(scenario())
    assert plane.calls == [("apply_peers", (Peer(2, "192.0.2.12"),)), ("apply_peers", ())]
    assert (follower.mode, follower.generation) == ("direct", 2)


def test_a_host_in_hub_mode_withdraws_the_direct_side_only_when_there_was_one() -> None:
    plane = NullRunnerDataPlane()
    follower = PeerFollower(plane)

    async def scenario() -> None:
        await follower.follow("hub", 1, None, 0)  # hub from the start: nothing to withdraw
        await follower.follow("direct", 1, TABLE, 1)
        await follower.follow("hub", 1, None, 0)

    asyncio.run(scenario())
    assert [name for name, _ in plane.calls] == ["apply_peers", "withdraw_direct"]


def test_probes_run_in_direct_mode_only() -> None:
    plane = NullRunnerDataPlane()
    follower = PeerFollower(plane)

    async def scenario() -> None:
        probing = asyncio.create_task(follower.probe_forever(0.01))
        await asyncio.sleep(0.1)
        assert ("probe_peers", None) not in plane.calls  # hub mode (or not told yet)
        await follower.follow("direct", 1, TABLE, 1)
        while ("probe_peers", None) not in plane.calls:
            await asyncio.sleep(0.01)
        probing.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_vteps_routes_are_the_overlays_own_not_underlay() -> None:
    """A direct-mode runner's routes via vxkrd lie in the overlay: its next welcome (or
    heartbeat_ack) must still pass the allocation check (the lab found them refused)."""
    settings = Settings(mode="runner", host_address="192.0.2.1")
    allocation = Allocation.model_validate({**ALLOCATION, "overlay_mode": "direct"})
    routes = [
        Route(IPv4Network("10.2.0.0/16"), VTEP_NAME, IPv4Address("10.2.0.0")),
        Route(IPv4Network("10.2.0.0/32"), VTEP_NAME),
        Route(IPv4Network("192.0.2.0/24"), "eth0"),
    ]
    assert own_allocation(settings, allocation, routes).overlay_mode == "direct"
