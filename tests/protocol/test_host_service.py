"""The host service over real loopback sockets: joins, liveness, leave, status and refusals."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from krnet.core.control.planes import NullHostDataPlane
from krnet.core.model.records import RunnerRecord, identity_hash
from krnet.core.protocol.channel import HOST_TO_RUNNER, Channel, new_nonce
from krnet.core.protocol.client import parse_address
from krnet.core.protocol.framing import MAX_LINE
from krnet.core.protocol.messages import Allocation, Bye, HeartbeatAck
from krnet.core.protocol.token import token_path, write_token
from krnet.core.record.store import Store
from krnet.errors import KernelError, ProtocolError, UsageError
from tests.protocol.peers import (
    TOKEN,
    RunningHost,
    StartHost,
    child_environment,
    connect,
    exchange,
    free_port,
    join,
    join_fields,
    join_once,
    spawn_serve,
    stop_serve,
    wait_for_port,
    wait_until,
)

IDENTITY = "0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c"


def records(host: RunningHost) -> list[Any]:
    return host.store.runners()


def error_of(lines: list[bytes]) -> dict[str, Any]:
    """The host's last line, which must be an error."""
    last = json.loads(lines[-1])
    assert last["type"] == "error", lines
    return last


async def test_full_join(host: RunningHost) -> None:
    connection, allocation = await join(host.port, identity=IDENTITY, hostname="runner-a")
    await connection.close()
    assert allocation.runner_id == 1
    assert (allocation.vni, allocation.subnet) == (101, "10.1.0.0/16")
    assert allocation.gateway == "10.1.0.1"
    assert allocation.host_ip_on_subnet == "10.1.0.254"
    assert (allocation.host_overlay_ip, allocation.overlay_cidr) == ("10.0.0.1", "10.0.0.0/8")
    assert allocation.host_physical_ip == "127.0.0.1"  # loopback setting: the join's address
    assert (allocation.mtu, allocation.vxlan_port, allocation.bridge_name) == (
        1450,
        4789,
        "kohaku-overlay",
    )
    [record] = records(host)
    assert (record.runner_id, record.identity_hash, record.hostname, record.status) == (
        1,
        identity_hash(IDENTITY),
        "runner-a",
        "active",
    )
    assert host.dataplane.calls[-1] == ("runner_up", allocation)


async def test_configured_reachable_address_is_sent(start_host: StartHost) -> None:
    host = await start_host(host_reachable_address="192.0.2.1")
    assert (await join_once(host.port)).host_physical_ip == "192.0.2.1"


async def test_reconnection_keeps_the_id(host: RunningHost) -> None:
    first = await join_once(host.port, identity=IDENTITY)
    other = await join_once(host.port, hostname="runner-b")
    again = await join_once(host.port, identity=IDENTITY)
    assert (first.runner_id, other.runner_id, again.runner_id) == (1, 2, 1)
    assert len(records(host)) == 2


async def test_restarted_host_keeps_every_id(start_host: StartHost) -> None:
    identities = [os.urandom(16).hex() for _ in range(3)]
    first = await start_host()
    before = [
        (await join_once(first.port, identity=i, hostname=f"runner-{i[:6]}")).runner_id
        for i in identities
    ]
    await first.service.stop()
    first.store.close()
    second = await start_host(data_dir=first.data_dir)
    after = [
        (await join_once(second.port, identity=i, hostname=f"runner-{i[:6]}")).runner_id
        for i in reversed(identities)
    ]
    assert before == [1, 2, 3]
    assert after == [3, 2, 1]
    assert second.dataplane.calls[0] == ("reconcile", [1, 2, 3])


async def test_heartbeat_updates_and_returns_the_allocation(host: RunningHost) -> None:
    connection, allocation = await join(host.port)
    await connection.send({"type": "heartbeat", "applied": None, "observed": {"mtu": 1450}})
    ack = await connection.receive(HeartbeatAck)
    await connection.close()
    assert ack.allocation() == allocation
    assert records(host)[0].observed == {"mtu": 1450, "applied": None}


async def test_silent_runner_becomes_inactive_and_keeps_its_id(start_host: StartHost) -> None:
    host = await start_host(runner_timeout=0.3)
    await join_once(host.port, identity=IDENTITY)
    await wait_until(lambda: records(host)[0].status == "inactive")
    assert records(host)[0].runner_id == 1
    assert (await join_once(host.port, identity=IDENTITY)).runner_id == 1


async def test_heartbeats_keep_a_runner_active(start_host: StartHost) -> None:
    host = await start_host(runner_timeout=0.3)
    connection, _ = await join(host.port)
    for _ in range(8):
        await asyncio.sleep(0.1)
        await connection.send({"type": "heartbeat", "applied": None, "observed": {}})
        await connection.receive(HeartbeatAck)
        assert records(host)[0].status == "active"
    await connection.close()


async def test_leave_frees_the_id(host: RunningHost) -> None:
    connection, allocation = await join(host.port, identity=IDENTITY)
    await connection.send({"type": "leave"})
    await connection.receive(Bye)
    await connection.close()
    assert records(host) == []
    assert host.dataplane.calls[-1] == ("runner_gone", allocation.runner_id)
    assert (await join_once(host.port, hostname="newcomer")).runner_id == 1


async def test_replayed_heartbeat_is_refused(host: RunningHost) -> None:
    connection, _ = await join(host.port)
    line = connection.channel.seal({"type": "heartbeat", "applied": None, "observed": {}})
    connection.writer.write(line + line)
    await connection.receive(HeartbeatAck)
    with pytest.raises(ProtocolError) as caught:
        await connection.receive(HeartbeatAck)
    assert caught.value.code == "auth_failed"


async def test_runner_behind_nat_keeps_its_claimed_address(host: RunningHost) -> None:
    allocation = await join_once(host.port, physical_ip="192.0.2.11")
    assert allocation.runner_physical_ip == "192.0.2.11"
    assert records(host)[0].physical_ip == "192.0.2.11"
    notes = [event.message for event in host.store.events() if event.kind == "address"]
    assert any("127.0.0.1" in note and "192.0.2.11" in note for note in notes)


async def test_status_request_returns_the_overlay_status(host: RunningHost) -> None:
    from krnet.core.observe.status import overlay_status
    from krnet.core.protocol.client import request_status

    await join_once(host.port, hostname="runner-a")
    status = await request_status("127.0.0.1", host.port, TOKEN, timeout=5.0)
    expected = overlay_status(
        mode="host",
        settings=host.service.settings,
        runners=records(host),
        now=host.service.clock(),
        runner_timeout=host.service.settings.runner_timeout,
    )
    assert status == json.loads(json.dumps(expected))
    assert [runner["hostname"] for runner in status["runners"]] == ["runner-a"]


async def test_status_request_with_a_wrong_token_is_refused(host: RunningHost) -> None:
    from krnet.core.protocol.client import request_status

    with pytest.raises(ProtocolError) as caught:
        await request_status("127.0.0.1", host.port, "0" * 64, timeout=5.0)
    assert caught.value.code == "auth_failed"


async def test_connections_beyond_the_limit_get_busy(start_host: StartHost) -> None:
    host = await start_host(max_connections=2, handshake_timeout=30.0)
    holders = [await connect(host.port), await connect(host.port)]
    with pytest.raises(ProtocolError) as caught:
        await connect(host.port)
    assert caught.value.code == "busy"
    for holder in holders:
        await holder.close()
    await wait_until(lambda: not host.service._connections)
    await join_once(host.port)


# -- refusals: each one leaves the record as it was and the host serving the next client ------


def signed_join(hello_line: bytes, token: str = TOKEN, **changes: Any) -> bytes:
    """A join signed for the session `hello_line` opened."""
    host_nonce = json.loads(hello_line)["nonce"]
    runner_nonce = new_nonce()
    channel = Channel(token, host_nonce, runner_nonce, "krnet runner->host")
    fields = {"type": "join", "version": 1, "nonce": runner_nonce, **join_fields(**changes)}
    return channel.seal(fields, sequenced=False)


async def refusal(host: RunningHost, payload: bytes | None, *, eof: bool = True) -> dict[str, Any]:
    """Send `payload` after hello (a signed join when None); return the host's error."""
    await join_once(host.port, identity=IDENTITY, hostname="runner-a")
    before = records(host)
    if payload is None:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        hello = await reader.readline()
        writer.write(signed_join(hello, token="f" * 64))
        lines = [hello, await reader.readline()]
        writer.close()
    else:
        lines = await exchange(host.port, payload, eof=eof)
    assert records(host) == before
    assert (await join_once(host.port, hostname="next")).runner_id == 2
    return error_of(lines)


async def test_wrong_token_is_refused(host: RunningHost) -> None:
    error = await refusal(host, None)
    assert error["code"] == "auth_failed"
    assert "join token" in error["message"]


async def test_replayed_join_is_refused(host: RunningHost) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
    captured = signed_join(await reader.readline(), identity=IDENTITY)
    writer.close()
    assert (await refusal(host, captured))["code"] == "auth_failed"


async def test_replayed_welcome_is_refused(host: RunningHost) -> None:
    """A welcome captured from one session fails the MAC check of another."""
    connection, _ = await join(host.port)
    host_nonce, runner_nonce = connection.channel.host_nonce, connection.channel.runner_nonce
    await connection.close()
    sender = Channel(TOKEN, host_nonce, runner_nonce, HOST_TO_RUNNER)
    old_welcome = json.loads(sender.seal({"type": "welcome"}))
    fresh = await connect(host.port)
    with pytest.raises(ProtocolError) as caught:
        fresh.channel.check(old_welcome)
    await fresh.close()
    assert caught.value.code == "auth_failed"


async def test_settings_mismatch_names_both_values(host: RunningHost) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
    writer.write(signed_join(await reader.readline(), mtu=1400, vxlan_port=8472))
    error = json.loads(await reader.readline())
    writer.close()
    assert error["code"] == "settings_mismatch"
    assert "OVERLAY_MTU: runner 1400, host 1450" in error["message"]
    assert "OVERLAY_VXLAN_PORT: runner 8472, host 4789" in error["message"]
    assert "OVERLAY_VXLAN_ID" not in error["message"]
    assert records(host) == []
    refused = [event.message for event in host.store.events() if event.kind == "refused"]
    assert any("OVERLAY_MTU: runner 1400, host 1450" in message for message in refused)
    assert (await refusal(host, b"{}\n"))["code"] == "bad_request"


JOIN_TEXT = json.dumps({"type": "join", "version": 1, **join_fields(), "nonce": "0" * 32})


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"type": "join", "version": 1\n', "bad_request"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'"join"\n', "bad_request"),
        (b'{"type": "conquer"}\n', "bad_request"),
        (b'{"type": "heartbeat", "seq": 1}\n', "bad_request"),
        (JOIN_TEXT.encode() + b"\n", "bad_request"),  # no mac
        (JOIN_TEXT.replace('"mtu": 1450', '"mtu": "1450"').encode() + b"\n", "bad_request"),
        (JOIN_TEXT.replace('"version": 1', '"version": 9').encode() + b"\n", "unsupported_version"),
        (b'{"type": "join", "pad": "' + b"x" * MAX_LINE + b'"}\n', "frame_too_large"),
        (b"\xc3\x28\xa0\xa1\n", "bad_request"),
        (bytes(range(256)) * 4, "bad_request"),
        (b'{"type": "jo', "bad_request"),  # stops mid-line and closes
    ],
    ids=[
        "malformed-json",
        "array",
        "string",
        "unknown-type",
        "wrong-type-for-state",
        "missing-field",
        "mistyped-field",
        "unsupported-version",
        "over-64k",
        "invalid-utf8",
        "random-binary",
        "eof-mid-line",
    ],
)
async def test_bad_frames_are_refused(host: RunningHost, payload: bytes, code: str) -> None:
    assert (await refusal(host, payload))["code"] == code


async def test_silent_client_times_out(start_host: StartHost) -> None:
    host = await start_host(handshake_timeout=0.3)
    assert (await refusal(host, b"", eof=False))["code"] == "timeout"


async def test_client_stalled_mid_line_times_out(start_host: StartHost) -> None:
    host = await start_host(handshake_timeout=0.3)
    assert (await refusal(host, b'{"type": "join", "ver', eof=False))["code"] == "timeout"


async def test_krnet_serve_host_answers_a_join_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    settings = {"mode": "host", "join_bind": "127.0.0.1", "join_port": port}
    process = spawn_serve(tmp_path, "host", {**settings, "overlay_enabled": False})
    try:
        await wait_for_port(port, process)
        allocation = await join_once(port, hostname="runner-a")
    finally:
        code, log = stop_serve(process)
    assert allocation.runner_id == 1
    assert code == 0, log
    assert "runner-a" in log
    with Store.open(tmp_path / "host") as store:
        assert [record.hostname for record in store.runners()] == ["runner-a"]


async def krnet_cli(tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    """Run the krnet CLI in a subprocess (the event loop keeps serving meanwhile)."""
    data_dir = tmp_path / "client"
    write_token(token_path(data_dir), TOKEN)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "krnet",
        "--data-dir",
        str(data_dir),
        *argv,
        env=child_environment(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_node_overlay_connect_shows_the_remote_host(
    host: RunningHost, tmp_path: Path
) -> None:
    await join_once(host.port, hostname="runner-a", physical_ip="192.0.2.11")
    address = f"127.0.0.1:{host.port}"
    code, out, err = await krnet_cli(tmp_path, "node", "overlay", "--json", "--connect", address)
    assert code == 0, err
    status = json.loads(out)
    assert (status["mode"], status["total"], status["active"]) == ("host", 1, 1)
    [runner] = status["runners"]
    assert (runner["hostname"], runner["physical_ip"], runner["interface"]) == (
        "runner-a",
        "192.0.2.11",
        "vxkr1",
    )


async def test_node_overlay_connect_to_nothing_says_what_to_check(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, _, err = await krnet_cli(tmp_path, "node", "overlay", "--connect", address)
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"krnet: cannot reach the host at {address}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.example", ("host.example", 8470)),
        ("192.0.2.1:9000", ("192.0.2.1", 9000)),
        ("[2001:db8::1]:9000", ("2001:db8::1", 9000)),
        ("[2001:db8::1]", ("2001:db8::1", 8470)),
    ],
)
def test_connect_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, 8470) == expected


@pytest.mark.parametrize("text", [":9000", "host:0", "host:http", "host:70000"])
def test_bad_connect_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--connect"):
        parse_address(text, 8470)


async def test_silent_welcomed_runner_is_dropped(host: RunningHost) -> None:
    """A half-open or silent peer after welcome: the host says timeout and closes."""
    connection, _ = await join(host.port)
    with pytest.raises(ProtocolError) as caught:
        await connection.receive(HeartbeatAck)
    await connection.close()
    assert caught.value.code == "timeout"
    assert records(host)[0].status == "active"  # dropping the connection keeps the id


class BrokenHostPlane(NullHostDataPlane):
    """A data plane that fails the way a kernel or a bug would."""

    def runner_up(self, runner: RunnerRecord, allocation: Allocation) -> None:
        super().runner_up(runner, allocation)
        raise KernelError("vxkr1: RTNETLINK answers: Operation not permitted (test)")

    def reconcile(self, runners: Sequence[RunnerRecord]) -> None:
        super().reconcile(runners)
        raise RuntimeError("a bug in reconcile (test)")


async def test_data_plane_failures_are_reported_not_fatal(start_host: StartHost) -> None:
    host = await start_host(dataplane=BrokenHostPlane(), reconcile_interval=0.05)
    with pytest.raises(ProtocolError) as caught:
        await join_once(host.port)
    assert caught.value.code == "internal"
    assert "vxkr1" in str(caught.value)
    assert any(event.kind == "tunnel_failed" for event in host.store.events())
    await wait_until(lambda: len(host.dataplane.calls) >= 4)  # reconcile keeps running
    with pytest.raises(ProtocolError):  # and the service keeps answering
        await join_once(host.port)
