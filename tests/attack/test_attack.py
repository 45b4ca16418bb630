"""The host under attack, over loopback and without root: floods, fuzzing, forgeries.

Each test runs a real `krnet serve` host in its own process (the overlay disabled, so the null
data plane stands in for the kernel) and asserts outcomes, never timings: the figures (join
latency under flood, memory) come from scripts/attack.py and are kept in docs/performance.md.
Refusals already covered by tests/protocol (wrong token, replayed join and welcome, bad
frames, an impostor's welcome, the busy limit at 2) are not repeated here.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings

from krnet.core.protocol.channel import new_nonce
from krnet.core.protocol.framing import MAX_LINE
from krnet.core.protocol.messages import HeartbeatAck
from tests.attack.hostile import (
    CASES,
    HostProcess,
    Peer,
    RawBytes,
    Session,
    SignedFirst,
    flood,
    host_process,
    open_slow,
    run_case,
    runners_by_id,
)
from tests.protocol.peers import join, join_fields, join_once, wait_until
from tests.protocol.test_agent import applied, running_agent

FLOOD = 1_000
MAX_CONNECTIONS = 1_024  # the default
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d [A-Z]+ ")


@contextmanager
def soft_open_files(limit: int) -> Iterator[None]:
    """This process's soft open-files limit set to `limit` (children inherit it), then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def open_files() -> Iterator[None]:
    """Room for a flood's client sockets in this process (1,000 + the limit's worth)."""
    needed = 4 * MAX_CONNECTIONS
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open-files limit is {hard}; the flood needs {needed}")
    with soft_open_files(needed):
        yield


def clean_log(host: HostProcess) -> None:
    """Every line the host logged is one of its own: no traceback, nothing a peer injected."""
    strangers = [line for line in host.log_lines if not LOG_LINE.match(line)]
    assert strangers == [], strangers[:5]
    assert "internal error" not in host.log


@pytest.fixture(scope="module")
def live_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    """One host for the fuzzer and the forgeries; short timers so a stuck peer ends quickly."""
    with host_process(
        tmp_path_factory.mktemp("live"), handshake_timeout=2.0, heartbeat_interval=0.2
    ) as host:
        yield host
    clean_log(host)


# -- slow connections ------------------------------------------------------------------------------


async def held_flood(host: HostProcess) -> tuple[int, int]:
    """1,000 slow connections held open while runners join; the host RSS before and during."""
    before = host.rss_kib()
    slow = await flood(host.port, FLOOD)
    assert Counter(client.first["type"] for client in slow) == {"hello": FLOOD}
    joined = [
        await join(host.port, hostname=f"real-{index}", physical_ip=f"192.0.2.{10 + index}")
        for index in range(8)
    ]
    assert sorted(allocation.runner_id for _, allocation in joined) == list(range(1, 9))

    # 1,000 slow + 8 runners are open: 16 more fit, then every new connection hears `busy`
    fill = [await open_slow(host.port, "silent") for _ in range(MAX_CONNECTIONS - FLOOD - 8)]
    assert {client.first["type"] for client in fill} == {"hello"}
    for _ in range(3):
        refused = await open_slow(host.port, "silent")
        assert (refused.first["type"], refused.first["code"]) == ("error", "busy")
        assert await refused.rest(timeout=30) == []  # and closed

    for connection, allocation in joined:  # the runners keep their sessions meanwhile
        await connection.send({"type": "heartbeat", "applied": None, "observed": {}})
        assert (await connection.receive(HeartbeatAck)).runner_id == allocation.runner_id
    during = host.rss_kib()
    for client in slow + fill:
        await client.close()
    for connection, _ in joined:
        await connection.close()
    return before, during


async def join_when_free(host: HostProcess) -> int:
    """A join once the host has let go of the closed flood (a runner retries `busy` too)."""
    while True:
        try:
            return (await join_once(host.port, hostname="after-the-flood")).runner_id
        except Exception as exc:
            assert "busy" in str(exc), exc
            await asyncio.sleep(0.1)


def test_runners_join_while_1000_slow_connections_are_held(
    tmp_path: Path, open_files: None
) -> None:
    with ExitStack() as stack:
        with soft_open_files(1024):  # where many systems start a service; serve lifts it
            host = stack.enter_context(host_process(tmp_path, handshake_timeout=60.0))
        before, during = asyncio.run(held_flood(host))
        assert asyncio.run(asyncio.wait_for(join_when_free(host), 60)) == 9
        assert host.alive()
        held = [Peer(host.port) for _ in range(50)]  # still open when SIGTERM comes
    assert host.process.returncode == 0
    for peer in held:
        peer.close()
    assert during - before < 100 * 1024, (before, during)  # KiB: well under 100 KiB a connection
    assert host.log.count("connections open (max_connections)") == 3
    assert "Too many open files" not in host.log
    clean_log(host)


async def dropped_flood(host: HostProcess) -> Counter[str]:
    """How each of 1,000 slow connections ended once handshake_timeout passed."""
    slow = await flood(host.port, FLOOD, interval=0.5)
    endings: Counter[str] = Counter()
    for client in slow:
        try:
            lines = await client.rest(timeout=60)
        except ConnectionResetError:  # a trickled byte raced the host's close: a reset
            lines = [{"code": "reset"}]
        endings[f"{client.kind}: {' '.join(line['code'] for line in lines)}"] += 1
        await client.close()
    return endings


def test_slow_connections_are_dropped_after_handshake_timeout(
    tmp_path: Path, open_files: None
) -> None:
    with host_process(tmp_path, handshake_timeout=2.0) as host:
        endings = asyncio.run(dropped_flood(host))
        assert (asyncio.run(join_once(host.port))).runner_id == 1
    per_kind = FLOOD // 3
    assert endings["silent: timeout"] == per_kind + 1
    assert endings["partial: timeout"] == per_kind
    # a byte a second does not buy more time: the deadline covers the whole first message
    assert endings["trickle: timeout"] + endings["trickle: reset"] == per_kind
    assert endings["trickle: timeout"] > 0
    assert host.log.count("no join or status_request within handshake_timeout") == FLOOD
    clean_log(host)


# -- the fuzzer ------------------------------------------------------------------------------------


def test_fuzzed_traffic_leaves_the_host_serving_and_the_record_as_real_joins_left_it(
    live_host: HostProcess,
) -> None:
    asyncio.run(join_once(live_host.port, hostname="bystander", physical_ip="192.0.2.10"))
    before = runners_by_id(live_host.overlay())
    welcomed: dict[int, tuple[str, str, int, str]] = {}
    kinds: Counter[str] = Counter()

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(CASES)
    # a nonce UTF-8 cannot carry once made the fuzzer's own signing raise (found in CI)
    @example(SignedFirst("join", "nonce", "\ud800", False))
    def attack(case: RawBytes | SignedFirst | Session) -> None:
        outcome = run_case(live_host.port, case)
        welcomed.update(outcome.welcomed)
        kinds[type(case).__name__] += 1
        assert live_host.alive()

    attack()
    assert set(kinds) == {"RawBytes", "SignedFirst", "Session"}
    final = asyncio.run(join_once(live_host.port, hostname="after-the-fuzz"))
    after = runners_by_id(live_host.overlay())
    real = {final.runner_id: ("after-the-fuzz", "127.0.0.1", final.vni, final.subnet)}
    assert after == before | welcomed | real


def host_error(peer: Peer, line: bytes) -> dict[str, Any]:
    peer.send(line)
    [error] = peer.lines()
    peer.close()
    return error


def test_a_field_name_cannot_forge_host_log_lines(live_host: HostProcess) -> None:
    forged = "2026-11-28T04:00:00 INFO krnet.host: runner 7 joined"
    join = {"type": "join", "version": 1, "nonce": new_nonce(), **join_fields(), "mac": "a" * 64}
    join[f"x\n{forged}" + "y" * 5000] = 1
    error = host_error(Peer(live_host.port), json.dumps(join).encode() + b"\n")
    assert error["code"] == "bad_request"
    assert "\n" not in error["message"] and len(error["message"]) < 1000
    deadline = time.monotonic() + 10
    while "\\n2026-11-28T04:00:00" not in live_host.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "\\n2026-11-28T04:00:00" in live_host.log
    assert not any(line.startswith(forged) for line in live_host.log_lines)


def test_an_oversized_observed_is_refused_and_not_recorded(live_host: HostProcess) -> None:
    """A heartbeat's observed is bounded, so every runner fits one status line."""

    async def scenario() -> str:
        connection, _ = await join(live_host.port, hostname="big", physical_ip="192.0.2.40")
        observed = {"network": "x" * (MAX_LINE // 2), "error": "e" * (MAX_LINE // 2 - 1000)}
        await connection.send({"type": "heartbeat", "applied": None, "observed": observed})
        try:
            await connection.receive(HeartbeatAck)
        except Exception as exc:
            return str(exc)
        finally:
            await connection.close()
        return "acknowledged"

    assert "at most 16384" in asyncio.run(scenario())
    status = live_host.overlay()
    [big] = [runner for runner in status["runners"] if runner["hostname"] == "big"]
    assert big["network"] is None


# -- forged answers to a runner (a man in the middle without the token) --------------------------


CUT_AFTER_FIRST_ACK = {"ack_from_an_earlier_session", "welcome_replayed_by_impostor"}


class Forger:
    """Relays between a runner and the host, rewriting the host's lines as `variant` says."""

    def __init__(self, upstream: int, variant: str) -> None:
        self.upstream = upstream
        self.variant = variant
        self.sessions = 0
        self.open = 0
        self.captured: dict[str, bytes] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        self.open += 1
        try:
            await self.session(self.sessions, reader, writer)
        finally:
            self.open -= 1

    async def session(
        self, session: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.variant == "welcome_replayed_by_impostor" and session == 2:
            await self.impostor(reader, writer)
            return
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream, limit=MAX_LINE
        )
        await asyncio.gather(
            self.relay(reader, up_writer),
            self.rewrite(session, up_reader, writer),
            return_exceptions=True,
        )

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(MAX_LINE):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def rewrite(
        self, session: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        acks = 0
        while line := await reader.readline():
            kind = json.loads(line)["type"]
            if session == 1 and kind in ("hello", "welcome"):
                self.captured[kind] = line
            if kind == "heartbeat_ack":
                acks += 1
                if (session, acks) == (1, 2) and self.variant in CUT_AFTER_FIRST_ACK:
                    break  # end the session, so that the runner opens the next one
                line = self.forge(session, acks, line)
            writer.write(line)
            await writer.drain()
        writer.close()

    def forge(self, session: int, ack: int, line: bytes) -> bytes:
        """The line the runner gets instead of the host's `ack`-th heartbeat_ack."""
        if session == 1 and ack == 1:
            self.captured["ack"] = line
        real = json.loads(line)
        if (self.variant, session, ack) == ("forged_ack_moves_the_subnet", 1, 1):
            moved = {"runner_id": 99, "vni": 199, "subnet": "10.99.0.0/16"}
            moved |= {"gateway": "10.99.0.1", "host_ip_on_subnet": "10.99.0.254"}
            moved["host_physical_ip"] = "203.0.113.66"
            return json.dumps(real | moved | {"mac": new_nonce() * 2}).encode() + b"\n"
        if (self.variant, session, ack) == ("ack_from_an_earlier_session", 2, 1):
            return self.captured["ack"]
        if (self.variant, session, ack) == ("ack_replayed_in_session", 1, 2):
            return self.captured["ack"]
        if (self.variant, session, ack) == ("forged_error", 1, 1):
            error = {"type": "error", "code": "settings_mismatch", "message": "OVERLAY_MTU: 9000"}
            return json.dumps(error).encode() + b"\n"
        return line

    async def impostor(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A fake host replaying the first session's hello (its nonce) and welcome."""
        writer.write(self.captured["hello"])
        await reader.readline()
        writer.write(self.captured["welcome"])
        await writer.drain()
        await reader.read()
        writer.close()


@pytest.mark.parametrize(
    ("variant", "logged", "sessions"),
    [
        ("forged_ack_moves_the_subnet", "host failed authentication", 2),
        ("ack_from_an_earlier_session", "host failed authentication", 3),
        ("ack_replayed_in_session", "host failed authentication: replayed", 2),
        ("welcome_replayed_by_impostor", "host failed authentication", 3),
        ("forged_error", "host refused (settings_mismatch)", 2),
    ],
)
async def test_runner_configures_nothing_from_a_forged_host_line(
    live_host: HostProcess,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    variant: str,
    logged: str,
    sessions: int,
) -> None:
    forger = Forger(live_host.port, variant)
    server = await asyncio.start_server(forger.handle, "127.0.0.1", 0, limit=MAX_LINE)
    port = server.sockets[0].getsockname()[1]
    # one runner (one data dir, so one identity and key) for every forgery against live_host:
    # a new one under this machine's hostname would be refused while the last is active
    async with running_agent(port, live_host.data_dir.parent / "runner") as agent:
        dataplane = agent.dataplane
        await wait_until(lambda: logged in caplog.text, timeout=30)
        # the runner reconnects and is welcomed again in a later, untouched session
        await wait_until(lambda: forger.sessions >= sessions and agent.applied is not None, 30)
        await wait_until(lambda: len(applied(dataplane)) >= 2, timeout=30)
    await wait_until(lambda: forger.open == 0)
    server.close()
    genuine, *again = applied(dataplane)  # type: ignore[arg-type]
    assert all(allocation == genuine for allocation in again)
    assert genuine.subnet != "10.99.0.0/16"  # type: ignore[attr-defined]
    record = runners_by_id(live_host.overlay())[genuine.runner_id]  # type: ignore[attr-defined]
    assert record[3] == genuine.subnet  # type: ignore[attr-defined]


def test_host_names_an_open_files_limit_too_low_for_max_connections(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-files limit to fall short of")
    with host_process(tmp_path, max_connections=hard) as host:
        assert asyncio.run(join_once(host.port)).runner_id == 1
    assert f"the open-files limit is {hard} but max_connections needs about {hard + 64}" in (
        host.log
    )
    assert "raise LimitNOFILE" in host.log
