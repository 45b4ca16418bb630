"""`krnet cleanup` on a runner gives its id back first: an authenticated `leave` over loopback."""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import replace
from pathlib import Path

from krnet.core.control.agent import KEY_FILE, RunnerAgent
from krnet.core.control.leave import leave_host
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.settings import Settings
from tests.protocol.peers import TOKEN, RunningHost, run_agent_until_applied

RUNNER_SETTINGS = Settings(
    mode="runner", host_address="127.0.0.1", overlay_enabled=True, handshake_timeout=2.0
)


async def enrol(host: RunningHost, data_dir: Path) -> Settings:
    """One runner joined (and enrolled) through its agent, which then stops."""
    settings = replace(RUNNER_SETTINGS, join_port=host.port)
    agent = RunnerAgent(settings, data_dir, TOKEN, NullRunnerDataPlane(), rng=random.Random(7))
    await run_agent_until_applied(host, agent)
    return settings


async def test_a_runner_that_leaves_frees_its_id_and_drops_its_key(
    host: RunningHost, tmp_path: Path
) -> None:
    data_dir = tmp_path / "runner"
    settings = await enrol(host, data_dir)
    said = await asyncio.to_thread(leave_host, settings, data_dir, TOKEN)
    assert said.startswith("left the host at 127.0.0.1:") and "runner id 1 is free" in said
    assert host.store.runners() == []
    assert ("runner_gone", 1) in host.dataplane.calls
    assert not (data_dir / KEY_FILE).exists()  # its key went with the record: it enrols afresh


async def test_an_unreachable_host_is_said_and_nothing_is_raised(
    host: RunningHost, tmp_path: Path
) -> None:
    data_dir = tmp_path / "runner"
    settings = await enrol(host, data_dir)
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        closed = replace(settings, join_port=unused.getsockname()[1])
    said = await asyncio.to_thread(leave_host, closed, data_dir, TOKEN)
    assert said.startswith("could not tell the host at 127.0.0.1:") and "node release" in said
    assert [runner.runner_id for runner in host.store.runners()] == [1]
    assert (data_dir / KEY_FILE).exists()


def test_a_runner_that_never_enrolled_has_nothing_to_tell(tmp_path: Path) -> None:
    said = leave_host(RUNNER_SETTINGS, tmp_path, TOKEN)
    assert said.startswith("no host to tell")
