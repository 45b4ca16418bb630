"""Proven problems 1 and 2 of issue 11: what a member holding the cluster token could do.

1. Identity theft: read the runners' identities from the authenticated status, join as the
   victim with another physical_ip, and the host re-points the victim's tunnel.
2. Impostor host: a token holder answering a runner's join (ARP or DNS spoofing on the
   underlay) with a hostile allocation, which the runner applied.

These tests use only what the code before per-runner keys also had (a real host service, the
real agent, loopback sockets), so each is shown to fail on that code.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from pathlib import Path

import pytest

from krnet.core.control.agent import RunnerAgent
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.settings import Settings
from krnet.core.protocol.framing import MAX_LINE
from krnet.core.protocol.messages import Allocation, StatusRequest, Welcome
from krnet.errors import ProtocolError
from tests.protocol.peers import (
    IMPOSTOR_ALLOCATION,
    TOKEN,
    RunningHost,
    connect,
    fake_host,
    join_fields,
    wait_until,
)

RUNNER_SETTINGS = Settings(mode="runner", host_address="127.0.0.1", handshake_timeout=2.0)


def agent_for(port: int, data_dir: Path, dataplane: NullRunnerDataPlane) -> RunnerAgent:
    settings = replace(RUNNER_SETTINGS, join_port=port)
    return RunnerAgent(settings, data_dir, TOKEN, dataplane, rng=random.Random(7))


async def everything_a_status_client_reads(port: int) -> bytes:
    """Every line a token holder gets for a status request with the whole snapshot."""
    connection = await connect(port)
    try:
        await connection.send_message(StatusRequest, snapshot=True)
        lines = []
        while line := await asyncio.wait_for(connection.reader.readline(), 30):
            lines.append(line)
        return b"".join(lines)
    finally:
        await connection.close()


async def test_a_member_cannot_read_identities_nor_join_as_another_runner(
    host: RunningHost, tmp_path: Path
) -> None:
    victim_plane = NullRunnerDataPlane()
    victim = agent_for(host.port, tmp_path / "victim", victim_plane)
    task = asyncio.create_task(victim.run())
    try:
        await wait_until(lambda: any("applied" in r.observed for r in host.store.runners()))
        (before,) = host.store.runners()
        seen = await everything_a_status_client_reads(host.port)
        assert victim.identity.encode() not in seen
        # the thief knows the identity anyway (it is in every join on the wire): not enough
        thief = await connect(host.port)
        try:
            stolen = join_fields(victim.identity, victim.hostname, "203.0.113.66")
            await thief.send_first("join", stolen)
            with pytest.raises(ProtocolError, match="already_enrolled"):
                await thief.receive(Welcome)
        finally:
            await thief.close()
        (after,) = [r for r in host.store.runners() if r.runner_id == before.runner_id]
        assert after.physical_ip == before.physical_ip == "127.0.0.1"
        tunnels = [call for call in host.dataplane.calls if call[0] == "runner_up"]
        assert all(getattr(a, "runner_physical_ip", None) == "127.0.0.1" for _, a in tunnels)
    finally:
        victim.stop()
        await asyncio.wait_for(task, 10)


HOSTILE = IMPOSTOR_ALLOCATION.model_copy(
    update={
        "overlay_cidr": "0.0.0.0/0",  # the default route into the overlay, FORWARD and NAT
        "bridge_name": "wg0",  # an existing link of the runner's, deleted as "not a bridge"
    }
)


@pytest.mark.parametrize(
    "allocation",
    [HOSTILE, HOSTILE.model_copy(update={"overlay_cidr": "10.0.0.0/8"})],
    ids=["default-route-overlay", "host-chosen-bridge"],
)
async def test_a_member_posing_as_the_host_gets_nothing_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, allocation: Allocation
) -> None:
    seen: list[dict[str, object]] = []
    server = await asyncio.start_server(
        fake_host(seen, allocation, TOKEN), "127.0.0.1", 0, limit=MAX_LINE
    )
    port = server.sockets[0].getsockname()[1]
    dataplane = NullRunnerDataPlane()
    agent = agent_for(port, tmp_path / "runner", dataplane)
    with caplog.at_level(logging.INFO, logger="krnet.runner"):
        task = asyncio.create_task(agent.run())
        try:
            await wait_until(lambda: len(seen) >= 2 or "refused" in caplog.text)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 10)
    server.close()
    configured = [arg for name, arg in dataplane.calls if name == "apply"]
    bridges = {getattr(arg, "bridge_name", None) for arg in configured}
    assert bridges <= {RUNNER_SETTINGS.overlay_bridge_name}
    if allocation.overlay_cidr == "0.0.0.0/0":
        assert configured == []
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) >= 1 and "nothing configured" in errors[0].getMessage()
        assert "overlay_cidr 0.0.0.0/0 is not inside a private network" in caplog.text
        assert "joined as runner" not in caplog.text
