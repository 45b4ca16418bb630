"""Direct mode over loopback: the peer table in the welcome, pushed on every change, applied."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from krnet.core.control.agent import RunnerAgent
from krnet.core.control.leave import leave_host
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.peers import Peer
from krnet.core.protocol.messages import Peers
from tests.protocol.peers import TOKEN, StartHost, join, wait_until
from tests.protocol.test_leave import RUNNER_SETTINGS


@asynccontextmanager
async def running_agent(
    port: int, data_dir: Path, name: str
) -> AsyncIterator[tuple[RunnerAgent, NullRunnerDataPlane]]:
    """A runner agent (its hostname `name`) joined to the host on `port` until the block ends."""
    plane = NullRunnerDataPlane()
    settings = replace(RUNNER_SETTINGS, join_port=port, heartbeat_interval=0.2)
    agent = RunnerAgent(settings, data_dir, TOKEN, plane, rng=random.Random(7))
    agent.hostname = name
    task = asyncio.create_task(agent.run())
    try:
        yield agent, plane
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def last_peers(plane: NullRunnerDataPlane) -> object:
    applied = [peers for name, peers in plane.calls if name == "apply_peers"]
    return applied[-1] if applied else None


async def test_runners_learn_a_join_and_a_leave_without_restarting(
    start_host: StartHost, tmp_path: Path
) -> None:
    host = await start_host(overlay_mode="direct", heartbeat_interval=0.2)
    async with running_agent(host.port, tmp_path / "r1", "runner-1") as (_, first):
        await wait_until(lambda: last_peers(first) == ())  # alone: a table without others
        async with running_agent(host.port, tmp_path / "r2", "runner-2") as (second_agent, second):
            await wait_until(lambda: last_peers(second) == (Peer(1, "127.0.0.1"),))
            await wait_until(lambda: last_peers(first) == (Peer(2, "127.0.0.1"),))
        settings = second_agent.settings
        said = await asyncio.to_thread(leave_host, settings, tmp_path / "r2", TOKEN)
        assert "runner id 2 is free" in said
        await wait_until(lambda: last_peers(first) == ())  # its entries go at once
    assert [r.runner_id for r in host.store.runners()] == [1]


async def test_a_push_comes_between_heartbeats_signed_and_newer_each_time(
    start_host: StartHost,
) -> None:
    host = await start_host(overlay_mode="direct")
    connection, allocation = await join(host.port, hostname="runner-a")
    try:
        assert allocation.overlay_mode == "direct"
        other, _ = await join(host.port, hostname="runner-b", physical_ip="127.0.0.2")
        await other.close()
        push = await connection.receive(Peers)
        assert [(p.runner_id, p.physical_ip) for p in push.peers] == [
            (1, "127.0.0.1"),
            (2, "127.0.0.2"),
        ]
        assert push.generation == host.service.context.peers.generation
    finally:
        await connection.close()


async def test_hub_mode_sends_no_table_and_applies_none(
    start_host: StartHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first hub welcome checks once for a direct side left from before; a clean runner
    (the null plane has none) removes nothing and says nothing."""
    host = await start_host()
    with caplog.at_level(logging.INFO, logger="krnet.runner"):
        async with running_agent(host.port, tmp_path / "r1", "runner-1") as (agent, plane):
            await wait_until(lambda: agent.applied is not None)
            await asyncio.sleep(0.5)  # a few heartbeats
    direct = [name for name, _ in plane.calls if name in ("apply_peers", "withdraw_direct")]
    assert direct == ["withdraw_direct"]
    assert not [record for record in caplog.records if "hub mode" in record.getMessage()]
    assert host.service.context.peers.generation == 0
