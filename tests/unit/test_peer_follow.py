"""The runner follows its host's mode and peer table: every peer but itself, applied once."""

from __future__ import annotations

import asyncio
import logging
from ipaddress import IPv4Address, IPv4Network

import pytest

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


def test_a_host_in_hub_mode_withdraws_the_direct_side_once_per_mode_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = NullRunnerDataPlane()
    follower = PeerFollower(plane)

    async def scenario() -> None:
        await follower.follow("hub", 1, None, 0)  # first welcome: a direct side left from before?
        await follower.follow("hub", 1, None, 0)  # a reconnect: already hub, nothing to do
        await follower.follow("direct", 1, TABLE, 1)
        await follower.follow("hub", 1, None, 0)

    with caplog.at_level(logging.INFO, logger="krnet.runner"):
        asyncio.run(scenario())
    called = [name for name, _ in plane.calls]
    assert called == ["withdraw_direct", "apply_peers", "withdraw_direct"]
    messages = [record.getMessage() for record in caplog.records if "hub mode" in record.message]
    assert messages == ["the host runs hub mode: the direct VTEP and its entries are gone"]


class LeftFromBefore(NullRunnerDataPlane):
    """A runner whose kernel still holds the `vxkrd` an earlier serve built."""

    def withdraw_direct(self) -> list[str]:
        super().withdraw_direct()
        return ["vxkrd: removed"]


def test_a_direct_side_left_from_before_goes_at_the_first_hub_welcome_and_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plane = LeftFromBefore()
    follower = PeerFollower(plane)
    with caplog.at_level(logging.INFO, logger="krnet.runner"):
        asyncio.run(follower.follow("hub", 1, None, 0))
    assert plane.calls == [("withdraw_direct", None)]
    assert follower.mode == "hub"
    [record] = [r for r in caplog.records if "hub mode" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "the host runs hub mode: removed a direct side left from before (vxkrd: removed)"
    )


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
