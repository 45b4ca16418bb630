"""Clients and a host for protocol tests: real sockets on loopback, no root."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from krnet.core.control.agent import RunnerAgent
from krnet.core.control.host import HostService
from krnet.core.control.planes import NullHostDataPlane
from krnet.core.model.settings import Settings
from krnet.core.protocol.channel import HOST_TO_RUNNER, Channel, mac_key
from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.framing import MAX_LINE, encode_frame
from krnet.core.protocol.messages import Allocation, Welcome
from krnet.core.protocol.token import token_path, write_token
from krnet.core.record.store import Store

TOKEN = "5c1f8e2a7b4d9c3e6f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"

HOST_SETTINGS = Settings(
    mode="host",
    join_bind="127.0.0.1",
    join_port=0,
    handshake_timeout=1.0,
    heartbeat_interval=0.2,
    runner_timeout=30.0,
)

# a well-formed join (its MAC is not checked by the parser)
JOIN_MESSAGE: dict[str, Any] = {
    "type": "join",
    "version": 1,
    "nonce": "0123456789abcdef0123456789abcdef",
    "identity": "fedcba9876543210fedcba9876543210",
    "hostname": "runner-1",
    "physical_ip": "192.0.2.11",
    "vxlan_id": 100,
    "vxlan_port": 4789,
    "mtu": 1450,
    "mac": "a" * 64,
}


@dataclass
class RunningHost:
    """A started HostService and what it was built from."""

    service: HostService
    store: Store
    dataplane: NullHostDataPlane
    data_dir: Path

    @property
    def port(self) -> int:
        return self.service.port


StartHost = Callable[..., Awaitable[RunningHost]]


def join_fields(
    identity: str | None = None,
    hostname: str = "runner-a",
    physical_ip: str = "127.0.0.1",
    **changes: Any,
) -> dict[str, Any]:
    return {
        "identity": identity or uuid.uuid4().hex,
        "hostname": hostname,
        "physical_ip": physical_ip,
        "vxlan_id": 100,
        "vxlan_port": 4789,
        "mtu": 1450,
        **changes,
    }


async def connect(port: int, token: str = TOKEN) -> HostConnection:
    """A client past `hello`; its timeout is a generous bound, never a measured figure."""
    return await HostConnection.open("127.0.0.1", port, token, timeout=60.0)


RUNNER_KEYS: dict[str, str] = {}  # identity -> the key its enrolment got (cleared per test)


async def join(port: int, token: str = TOKEN, **fields: Any) -> tuple[HostConnection, Allocation]:
    """Join over a fresh connection, as a runner does: signed by the key this identity was
    given at enrolment, if any; the connection stays open for heartbeats."""
    message = join_fields(**fields)
    connection = await connect(port, mac_key(token, RUNNER_KEYS.get(message["identity"])))
    await connection.send_first("join", message)
    welcome = await connection.receive(Welcome)
    if welcome.runner_key is not None:
        RUNNER_KEYS[message["identity"]] = welcome.runner_key
        connection.channel.enrol(token, welcome.runner_key)
    return connection, welcome.allocation()


async def join_once(port: int, **fields: Any) -> Allocation:
    connection, allocation = await join(port, **fields)
    await connection.close()
    return allocation


async def exchange(port: int, payload: bytes, *, eof: bool = True) -> list[bytes]:
    """Read hello, send raw bytes, and collect every line the host sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE * 2)
    try:
        lines = [await reader.readline()]
        writer.write(payload)
        if eof:
            writer.write_eof()
        await writer.drain()
        while line := await asyncio.wait_for(reader.readline(), 10):
            lines.append(line)
        return lines
    finally:
        writer.close()


IMPOSTOR_ALLOCATION = Allocation(  # a plausible allocation pointing the tunnel at 203.0.113.66
    runner_id=1,
    vni=101,
    subnet="10.1.0.0/16",
    gateway="10.1.0.1",
    host_overlay_ip="10.0.0.1",
    host_ip_on_subnet="10.1.0.254",
    host_physical_ip="203.0.113.66",
    runner_physical_ip="127.0.0.1",
    overlay_cidr="10.0.0.0/8",
    bridge_name="kohaku-overlay",
    mtu=1450,
    vxlan_port=4789,
    vxlan_id=100,
    heartbeat_interval=1.0,
)


def fake_host(
    seen: list[dict[str, object]], allocation: Allocation, token: str
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A peer posing as the host: answers every join with `allocation`, signed with `token`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonce = "1" * 32
        hello = {"type": "hello", "version": 1, "nonce": nonce, "server": "krnet 0.1.0"}
        writer.write(encode_frame(hello))
        join = json.loads(await reader.readline())
        seen.append(join)
        channel = Channel(token, nonce, join["nonce"], HOST_TO_RUNNER)
        writer.write(channel.seal({"type": "welcome", **allocation.model_dump()}))
        await writer.drain()
        await reader.read()
        writer.close()

    return serve


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `condition` holds; fail (not a timing assertion: a generous bound) otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached within the bound")
        await asyncio.sleep(0.02)


def free_port() -> int:
    """A TCP port nobody listens on right now (for a subprocess that needs a fixed one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_environment(home: Path) -> dict[str, str]:
    """For a krnet subprocess: this source tree, a private HOME, no KRNET_* from outside, and a
    DOCKER_HOST where no daemon listens (never this machine's own Docker)."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KRNET_")}
    return environ | {
        "HOME": str(home),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "DOCKER_HOST": f"unix://{home}/no-docker.sock",
    }


def spawn_serve(tmp_path: Path, name: str, settings: dict[str, Any]) -> subprocess.Popen[bytes]:
    """`python -m krnet serve` with a krnet.toml of `settings`, the token, and a private HOME."""
    data_dir = tmp_path / name
    write_token(token_path(data_dir), TOKEN)
    config = tmp_path / f"{name}.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
    command = [sys.executable, "-m", "krnet", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--data-dir", str(data_dir), "serve"],
        env=child_environment(tmp_path),
        stderr=subprocess.PIPE,
    )


async def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until `process` listens on `port` (or fail if it died)."""

    def listening() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    await wait_until(listening, timeout=30)


def stop_serve(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM, then the exit code and everything it logged."""
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr.decode()


async def run_agent_until_applied(host: RunningHost, agent: RunnerAgent) -> None:
    """Run a runner's agent until the host has its heartbeat with `applied`, then stop it."""
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: any("applied" in r.observed for r in host.store.runners()))
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
