"""The runner agent against a real host service (and an impostor) over loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from krnet.core.control.agent import BACKOFF_CAP, RunnerAgent, backoff_delays, load_identity
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.records import identity_hash
from krnet.core.model.runner_state import RunnerState
from krnet.core.model.settings import Settings
from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.framing import MAX_LINE, encode_frame
from krnet.core.protocol.messages import Allocation
from krnet.core.record.reader import read_runner_state
from krnet.core.record.store import Store
from krnet.errors import ConfigError, KernelError, ProtocolError
from tests.protocol.peers import (
    IMPOSTOR_ALLOCATION,
    TOKEN,
    RunningHost,
    StartHost,
    fake_host,
    free_port,
    spawn_serve,
    stop_serve,
    wait_until,
)

RUNNER_SETTINGS = Settings(mode="runner", host_address="127.0.0.1", handshake_timeout=2.0)


@asynccontextmanager
async def running_agent(
    port: int,
    data_dir: Path,
    *,
    token: str = TOKEN,
    dataplane: NullRunnerDataPlane | None = None,
    store: Store | None = None,
    hostname: str | None = None,
    **changes: Any,
) -> AsyncIterator[RunnerAgent]:
    """An agent running in the background (as `hostname`, else this machine's); stopped
    (never left) on exit."""
    settings = replace(RUNNER_SETTINGS, join_port=port, **changes)
    agent = RunnerAgent(
        settings,
        data_dir,
        token,
        dataplane or NullRunnerDataPlane(),
        store=store,
        rng=random.Random(7),
    )
    agent.hostname = hostname or agent.hostname
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def heartbeats_seen(host: RunningHost) -> bool:
    return any("applied" in record.observed for record in host.store.runners())


def applied(dataplane: NullRunnerDataPlane) -> list[object]:
    return [argument for name, argument in dataplane.calls if name == "apply"]


async def test_agent_joins_applies_and_records_its_allocation(
    host: RunningHost, tmp_path: Path
) -> None:
    dataplane = NullRunnerDataPlane()
    with Store.open(tmp_path / "runner") as store:
        async with running_agent(host.port, tmp_path / "runner", dataplane=dataplane, store=store):
            await wait_until(lambda: bool(applied(dataplane)))
            await wait_until(lambda: heartbeats_seen(host))
            [mine] = store.runners()
    [allocation] = applied(dataplane)
    assert isinstance(allocation, Allocation)
    assert (allocation.runner_id, allocation.subnet) == (1, "10.1.0.0/16")
    [record] = host.store.runners()
    assert record.hostname == socket.gethostname()
    assert record.identity_hash == identity_hash(load_identity(tmp_path / "runner"))
    assert record.observed["applied"] == {
        "runner_id": 1,
        "vni": 101,
        "subnet": "10.1.0.0/16",
        "mtu": 1450,
    }
    assert (mine.runner_id, mine.hostname) == (1, record.hostname)
    assert mine.identity_hash == record.identity_hash
    assert (mine.subnet, mine.vni, mine.status) == ("10.1.0.0/16", 101, "active")


async def test_agent_reconnects_to_a_restarted_host_with_the_same_id(
    start_host: StartHost, tmp_path: Path
) -> None:
    first = await start_host()
    port = first.port
    dataplane = NullRunnerDataPlane()
    async with running_agent(port, tmp_path / "runner", dataplane=dataplane) as agent:
        await wait_until(lambda: agent.applied is not None)
        await first.service.stop()
        first.store.close()
        second = await start_host(data_dir=first.data_dir, join_port=port)
        await wait_until(lambda: len(applied(dataplane)) >= 2)
        assert second.store.runners()[0].runner_id == 1
    assert {allocation.runner_id for allocation in applied(dataplane)} == {1}  # type: ignore[attr-defined]


async def test_the_backoff_starts_again_after_every_welcome(
    start_host: StartHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: a session the host welcomed and that then lost its connection did not reset
    # the step, so each host restart made a runner wait twice as long (up to 30 s) to follow.
    host = await start_host()
    port, data_dir = host.port, host.data_dir
    dataplane = NullRunnerDataPlane()
    with caplog.at_level(logging.INFO, logger="krnet.runner"):
        async with running_agent(port, tmp_path / "runner", dataplane=dataplane):
            for welcomes in range(1, 4):
                await wait_until(lambda n=welcomes: len(applied(dataplane)) >= n)  # type: ignore[misc]
                if welcomes < 3:
                    await host.service.stop()
                    host.store.close()
                    host = await start_host(data_dir=data_dir, join_port=port)
    delays = [
        float(line.split(" in ")[1].split()[0])
        for line in caplog.messages
        if "reconnecting" in line
    ]
    assert len(delays) == 2 and all(delay <= 1.0 for delay in delays), delays  # each a first step


@pytest.mark.parametrize(
    ("changes", "logged"),
    [
        ({"token": "e" * 64}, "auth_failed"),
        ({"overlay_vxlan_id": 200}, "OVERLAY_VXLAN_ID: runner 200, host 100"),
        ({"overlay_mtu": 1400}, "OVERLAY_MTU: runner 1400, host 1450"),
    ],
)
async def test_refused_agent_configures_nothing_and_logs_why(
    host: RunningHost,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, object],
    logged: str,
) -> None:
    dataplane = NullRunnerDataPlane()
    with caplog.at_level(logging.ERROR, logger="krnet.runner"):
        async with running_agent(host.port, tmp_path / "runner", dataplane=dataplane, **changes):
            await wait_until(lambda: logged in caplog.text)
    assert applied(dataplane) == []
    assert host.store.runners() == []


async def impostor(
    seen: list[dict[str, object]],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]:
    """A fake host that answers every join with a welcome signed by the wrong token."""
    return fake_host(seen, IMPOSTOR_ALLOCATION, "wrong" * 13)


async def test_agent_configures_nothing_from_an_impostor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dict[str, object]] = []
    server = await asyncio.start_server(await impostor(seen), "127.0.0.1", 0, limit=MAX_LINE)
    port = server.sockets[0].getsockname()[1]
    dataplane = NullRunnerDataPlane()
    with caplog.at_level(logging.ERROR, logger="krnet.runner"):
        async with running_agent(port, tmp_path / "runner", dataplane=dataplane):
            await wait_until(lambda: "host failed authentication" in caplog.text)
    server.close()
    assert seen and seen[0]["type"] == "join"
    assert dataplane.calls == []


class FailsOnce(NullRunnerDataPlane):
    """A data plane whose first apply fails, as a kernel refusal would."""

    def apply(self, allocation: Allocation) -> None:
        super().apply(allocation)
        if len(self.calls) == 1:
            raise KernelError("vxlan0: could not be created (test)")


async def test_agent_converges_after_a_failed_apply(host: RunningHost, tmp_path: Path) -> None:
    dataplane = FailsOnce()
    async with running_agent(host.port, tmp_path / "runner", dataplane=dataplane) as agent:
        await wait_until(lambda: agent.applied is not None)
    assert len(applied(dataplane)) == 2


def test_identity_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_identity(tmp_path / "runner")
    assert first == load_identity(tmp_path / "runner")
    assert len(first) == 32
    mode = (tmp_path / "runner" / "runner_identity").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_a_damaged_identity_is_named(tmp_path: Path) -> None:
    (tmp_path / "runner_identity").write_text("not an id\n")
    with pytest.raises(ConfigError, match="runner_identity"):
        load_identity(tmp_path)


def test_runner_without_host_address_is_told_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host_address"):
        RunnerAgent(Settings(mode="runner"), tmp_path, TOKEN, NullRunnerDataPlane())


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(random.Random(1))
    steps = [next(delays) for _ in range(12)]
    ceilings = [min(BACKOFF_CAP, 2.0**n) for n in range(12)]
    pairs = zip(steps, ceilings, strict=True)
    assert all(ceiling / 2 <= delay <= ceiling for delay, ceiling in pairs)
    assert len(set(steps)) == len(steps)


async def test_krnet_serve_runner_with_the_overlay_off_never_joins(
    host: RunningHost, tmp_path: Path
) -> None:
    """Reference, "Network Selection": overlay off means the default network and no id taken.

    The overlay-on runner (`krnet serve` joining, building its tunnel) needs root and runs in
    the namespace lab: tests/lab/test_cluster.py.
    """
    settings = {"mode": "runner", "host_address": "127.0.0.1", "join_port": host.port}
    process = spawn_serve(tmp_path, "runner", {**settings, "overlay_enabled": False})
    try:
        # started and decided (however slow the machine is to import it), then long enough
        # for a join to have happened, were it to
        seen = await asyncio.to_thread(read_until, process, "overlay disabled", 60)
        await asyncio.sleep(2)
        assert process.poll() is None
    finally:
        code, rest = stop_serve(process)
    log = seen + rest
    assert code == 0, log
    assert "overlay disabled: containers use kohakuriver-net" in log
    assert host.store.runners() == []


def read_until(process: subprocess.Popen[bytes], text: str, timeout: float) -> str:
    """The process's stderr up to and including the first line holding `text`."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        lines.append(line)
        if text in line or not line:
            break
    return "".join(lines)


async def test_host_speaking_another_version_is_refused(tmp_path: Path) -> None:
    async def future_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = {"type": "hello", "version": 2, "nonce": "2" * 32, "server": "krnet 9"}
        writer.write(encode_frame(hello))
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(future_host, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ProtocolError) as caught:
        await HostConnection.open("127.0.0.1", port, TOKEN, timeout=10)
    server.close()
    assert caught.value.code == "unsupported_version"


class AlwaysFails(NullRunnerDataPlane):
    """A data plane that can never set up: a leftover link holds the VNI (the same error)."""

    def apply(self, allocation: Allocation) -> None:
        super().apply(allocation)
        raise KernelError("vxlan0: VNI 101 is held by leftover link vx-old: ip link del vx-old")


def published(data_dir: Path) -> RunnerState | None:
    return read_runner_state(data_dir)


async def test_a_persistent_setup_failure_is_logged_once_and_published(
    host: RunningHost, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (issue 12, item 5): on ccbb48d every heartbeat logged the failure again.
    dataplane = AlwaysFails()
    with (
        Store.open(tmp_path / "runner") as store,
        caplog.at_level(logging.ERROR, logger="krnet.runner"),
    ):
        async with running_agent(host.port, tmp_path / "runner", dataplane=dataplane, store=store):
            await wait_until(lambda: len(applied(dataplane)) >= 5)
        events = [event for event in store.events() if event.kind == "setup"]
    failures = [record for record in caplog.records if "could not apply" in record.getMessage()]
    assert len(failures) == 1
    assert "ip link del vx-old" in failures[0].getMessage()
    assert [event.runner_id for event in events] == [1]  # once in the Events view too
    state = published(tmp_path / "runner")
    assert state is not None and state.setup_error is not None
    assert "vx-old" in state.setup_error
    assert state.network == "kohakuriver-net"
    assert state.network_reason is not None and "set-up failed" in state.network_reason


async def test_an_unreachable_host_is_published_as_the_fallback_reason(tmp_path: Path) -> None:
    async with running_agent(free_port(), tmp_path / "runner") as agent:
        await wait_until(lambda: published(tmp_path / "runner") is not None)
        assert agent.applied is None
    state = published(tmp_path / "runner")
    assert state is not None and state.allocation is None
    assert state.network == "kohakuriver-net"
    assert state.network_reason is not None and "host unreachable" in state.network_reason


async def test_a_runner_refused_after_its_id_was_reclaimed_gives_it_up(
    start_host: StartHost, tmp_path: Path
) -> None:
    # a pool of one id (/8 cut into /9 blocks: block 0 is the host's), short timeout
    host = await start_host(overlay_runner_prefix=9, runner_timeout=0.6)
    first, second = NullRunnerDataPlane(), NullRunnerDataPlane()
    with Store.open(tmp_path / "a") as store:
        async with running_agent(host.port, tmp_path / "a", dataplane=first, store=store):
            await wait_until(lambda: bool(store.runners()))
        await wait_until(lambda: host.store.runners()[0].status == "inactive")
        # another machine (a runner of the same hostname would be this one's reinstall)
        taker_runs = running_agent(host.port, tmp_path / "b", dataplane=second, hostname="taker")
        async with taker_runs as taker:
            await wait_until(lambda: taker.applied is not None)
            async with running_agent(host.port, tmp_path / "a", dataplane=first, store=store):
                await wait_until(lambda: ("withdraw", None) in first.calls)
                await wait_until(lambda: not store.runners())
            assert [event.kind for event in store.events()].count("lost") == 1
    state = published(tmp_path / "a")
    assert state is not None and state.allocation is None
    assert state.network == "kohakuriver-net"
    assert state.network_reason is not None and "pool_exhausted" in state.network_reason
