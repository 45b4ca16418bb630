"""`release_request` over loopback with the overlay off, and the `node release|prune` commands.

The host is a real HostService (NullHostDataPlane: no kernel); the commands run in-process in
a thread against it, as they would on the host itself or with --connect.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from krnet.cli import main
from krnet.core.control.planes import NullHostDataPlane
from krnet.core.protocol.client import request_release
from krnet.core.protocol.framing import read_frame
from krnet.core.protocol.messages import HeartbeatAck, ReleasedRunner
from krnet.errors import KernelError, ProtocolError
from tests.protocol.peers import (
    RUNNER_KEYS,
    TOKEN,
    RunningHost,
    StartHost,
    child_environment,
    connect,
    free_port,
    join,
    join_once,
    wait_until,
)

IDENTITY = "0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c"
START = datetime(2026, 11, 28, 1, 0, 0, tzinfo=timezone.utc)


@dataclass
class Clock:
    """The host's clock, moved by the test (runners' last_seen come from it)."""

    now: datetime = field(default=START)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


async def release(host: RunningHost, **fields: Any) -> list[ReleasedRunner]:
    return await request_release("127.0.0.1", host.port, TOKEN, 60.0, fields)


async def refusal(host: RunningHost, **fields: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await release(host, **fields)
    return caught.value


def ids(host: RunningHost) -> list[int]:
    return [runner.runner_id for runner in host.store.runners()]


def kinds(host: RunningHost) -> list[str]:
    return [event.kind for event in reversed(host.store.events())]


async def two_inactive(start_host: StartHost) -> tuple[RunningHost, Clock]:
    """A host with runner-a (id 1) and runner-b (id 2), both silent past runner_timeout."""
    clock = Clock()
    host = await start_host(clock=clock, runner_timeout=30.0)
    await join_once(host.port, hostname="runner-a", identity=IDENTITY)
    await join_once(host.port, hostname="runner-b")
    clock.advance(seconds=60)
    await wait_until(lambda: {r.status for r in host.store.runners()} == {"inactive"})
    return host, clock


async def test_release_by_id_frees_the_id_records_one_event_and_removes_the_tunnel(
    start_host: StartHost,
) -> None:
    host, _ = await two_inactive(start_host)
    [released] = await release(host, runner="2")
    assert (released.runner_id, released.hostname, released.status) == (2, "runner-b", "inactive")
    assert released.last_seen == "2026-11-28T01:00:00Z" and released.tunnel_error is None
    assert ids(host) == [1]
    assert kinds(host).count("release") == 1
    [event] = [e for e in host.store.events() if e.kind == "release"]
    assert event.runner_id == 2 and "released by hand" in event.message
    assert host.dataplane.calls[-1] == ("runner_gone", 2)


async def test_a_runner_silent_past_its_timeout_is_released_as_inactive_before_it_is_judged(
    start_host: StartHost,
) -> None:
    """`node overlay` shows a silent runner inactive before the host's liveness timer marks
    it so; the release's answer says the same, not the record's not-yet-judged `active`."""
    clock = Clock()
    host = await start_host(clock=clock, runner_timeout=30.0)
    await join_once(host.port, hostname="runner-a", identity=IDENTITY)
    clock.advance(seconds=60)  # and release at once: the timer has not judged it yet
    [released] = await release(host, runner="1")
    assert (released.runner_id, released.status) == (1, "inactive")


async def test_release_by_hostname(start_host: StartHost) -> None:
    host, _ = await two_inactive(start_host)
    assert [r.runner_id for r in await release(host, runner="runner-a")] == [1]
    assert ids(host) == [2]


class UnremovablePlane(NullHostDataPlane):
    """A kernel that refuses to delete links (the mock: a real one cannot be made to fail)."""

    def runner_gone(self, runner_id: int) -> None:
        super().runner_gone(runner_id)
        raise KernelError(f"delete vxkr{runner_id}: Operation not permitted\x1b[31m (test)")


async def test_a_failed_removal_is_reported_and_the_release_stands(
    start_host: StartHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    host = await start_host(clock=clock, dataplane=UnremovablePlane())
    await join_once(host.port, hostname="runner-a")
    clock.advance(minutes=5)
    assert await krnet(tmp_path, host.port, "node", "release", "1", "--yes") == 0
    out = capsys.readouterr().out
    assert "removing vxkr1 failed (delete vxkr1: Operation not permitted?[31m (test))" in out
    assert "the host's next reconcile removes it" in out and "\x1b" not in out
    assert ids(host) == [] and kinds(host)[-2:] == ["release", "tunnel_failed"]


async def test_a_released_runner_that_comes_back_is_new(start_host: StartHost) -> None:
    host, _ = await two_inactive(start_host)
    await release(host, runner="1")
    # with its old key, nothing removed on it: its host still knows that key (retired) and
    # enrols it afresh (docs/operations.md, "Releasing runners")
    old_key = RUNNER_KEYS[IDENTITY]
    allocation = await join_once(host.port, hostname="runner-a", identity=IDENTITY)
    assert allocation.runner_id == 1  # the lowest free id, as for any newcomer
    assert RUNNER_KEYS[IDENTITY] != old_key  # a new key
    assert kinds(host)[-1] == "join"  # not "rejoin": the record no longer knew it


async def test_unknown_runner_is_refused_and_nothing_changes(start_host: StartHost) -> None:
    host, _ = await two_inactive(start_host)
    for name in ("7", "nobody"):
        error = await refusal(host, runner=name)
        assert error.code == "unknown_runner"
        assert f"no runner {name!r} on this host" in str(error)
    assert ids(host) == [1, 2] and "release" not in kinds(host)


async def test_active_runner_needs_force_and_its_agent_then_rejoins_as_new(
    start_host: StartHost,
) -> None:
    host = await start_host(runner_timeout=30.0)
    connection, _ = await join(host.port, hostname="runner-a", identity=IDENTITY)
    error = await refusal(host, runner="runner-a")
    assert error.code == "runner_active"
    assert "within runner_timeout (30 s)" in str(error) and "--force" in str(error)
    assert ids(host) == [1]
    [released] = await release(host, runner="runner-a", force=True)
    assert released.status == "active" and ids(host) == []
    # what the still-running agent sees: its next heartbeat is refused, it rejoins as new
    await connection.send({"type": "heartbeat", "applied": None, "observed": {}})
    with pytest.raises(ProtocolError) as caught:
        await connection.receive(HeartbeatAck)
    await connection.close()
    assert caught.value.code == "bad_request" and "released" in str(caught.value)
    assert (await join_once(host.port, hostname="runner-a", identity=IDENTITY)).runner_id == 1
    assert kinds(host)[-1] == "join"


async def test_prune_releases_every_inactive_runner_and_spares_active_ones(
    start_host: StartHost,
) -> None:
    host, _ = await two_inactive(start_host)
    await join_once(host.port, hostname="runner-c")  # heard just now
    released = await release(host, prune=True)
    assert [r.runner_id for r in released] == [1, 2]
    assert ids(host) == [3] and kinds(host).count("release") == 2


async def test_prune_older_than_releases_only_runners_silent_that_long(
    start_host: StartHost,
) -> None:
    host, clock = await two_inactive(start_host)  # both silent 60 s
    clock.advance(hours=2)
    await join_once(host.port, hostname="runner-c")
    clock.advance(minutes=45)  # runner-c silent 45 min, the others 2 h 46 min
    assert await release(host, prune=True, older_than=3 * 3600.0) == []
    assert [r.runner_id for r in await release(host, prune=True, older_than=3600.0)] == [1, 2]
    assert ids(host) == [3]


async def test_a_prune_of_more_runners_than_one_line_holds_comes_in_parts(
    start_host: StartHost,
) -> None:
    clock = Clock()
    host = await start_host(clock=clock, runner_timeout=30.0)
    for index in range(60):
        await join_once(host.port, hostname=f"runner-{index:02d}-" + "h" * 200)
    clock.advance(minutes=5)
    released = await release(host, prune=True)
    assert [r.runner_id for r in released] == list(range(1, 61)) and ids(host) == []


async def test_dry_run_changes_nothing(start_host: StartHost) -> None:
    host, _ = await two_inactive(start_host)
    planned = await release(host, prune=True, dry_run=True)
    assert [r.runner_id for r in planned] == [1, 2]
    assert ids(host) == [1, 2] and "release" not in kinds(host)
    assert ("runner_gone", 1) not in host.dataplane.calls


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"runner": "1", "prune": True},
        {"runner": "1", "older_than": 60.0},
        {"prune": True, "force": True},
        {"prune": True, "older_than": -1.0},
        {"runner": "two words"},
    ],
)
async def test_malformed_requests_are_bad_requests(
    start_host: StartHost, fields: dict[str, Any]
) -> None:
    host, _ = await two_inactive(start_host)
    connection = await connect(host.port)
    await connection.send_first("release_request", fields)
    error = json.loads(await connection.reader.readline())
    assert error["type"] == "error" and error["code"] == "bad_request"
    assert await read_frame(connection.reader) is None
    await connection.close()
    assert ids(host) == [1, 2]


async def test_a_wrong_token_releases_nothing(start_host: StartHost) -> None:
    host, _ = await two_inactive(start_host)
    with pytest.raises(ProtocolError) as caught:
        await request_release("127.0.0.1", host.port, "0" * 64, 60.0, {"prune": True})
    assert caught.value.code == "auth_failed" and ids(host) == [1, 2]


# -- the commands ----------------------------------------------------------------------------


def host_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "host.toml"
    config.write_text(
        f'mode = "host"\njoin_bind = "127.0.0.1"\njoin_port = {port}\njoin_token = "{TOKEN}"\n'
    )
    return config


async def krnet(tmp_path: Path, port: int, *args: str) -> int:
    """`krnet --config host.toml ARGS` in a thread (the host runs on this test's loop)."""
    argv = ["--config", str(host_config(tmp_path, port)), "--data-dir", str(tmp_path / "cli")]
    return await asyncio.to_thread(main, [*argv, *args])


async def test_release_command_prints_what_it_did_and_json_lists_it(
    start_host: StartHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, _ = await two_inactive(start_host)
    assert await krnet(tmp_path, host.port, "node", "release", "runner-b", "--yes") == 0
    out = capsys.readouterr().out
    assert out.startswith("released runner 2 (runner-b, 127.0.0.1, inactive, last seen 2026-11-")
    assert "id 2 is free; vxkr2 and its guard entry removed" in out
    assert await krnet(tmp_path, host.port, "node", "prune", "--yes", "--json") == 0
    [entry] = json.loads(capsys.readouterr().out)["released"]
    assert (entry["runner_id"], entry["hostname"], entry["tunnel_error"]) == (1, "runner-a", None)
    assert ids(host) == []
    assert await krnet(tmp_path, host.port, "node", "prune", "--yes") == 0
    assert capsys.readouterr().out == "no inactive runner to release (every inactive runner)\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["release", "nobody", "--yes"],
            "krnet: host refused (unknown_runner); its message: \"no runner 'nobody'",
        ),
        (
            ["release", "3", "--yes"],
            'krnet: host refused (runner_active); its message: "runner 3 (runner-c)',
        ),
        (["release", "1"], "krnet: release frees the ids, tunnels and guard entries of runner 1:"),
        (["prune"], "krnet: prune frees the ids, tunnels and guard entries of every inactive"),
        (["prune", "--yes", "--older-than", "3x"], "krnet: --older-than '3x' is not a duration"),
        (["release", "two words", "--yes"], "krnet: RUNNER 'two words' is neither a runner id"),
    ],
)
async def test_commands_refuse_bad_input_with_one_line_and_exit_2(
    start_host: StartHost,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    line: str,
) -> None:
    host, _ = await two_inactive(start_host)
    await join_once(host.port, hostname="runner-c")
    assert await krnet(tmp_path, host.port, "node", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    assert ids(host) == [1, 2, 3]


@pytest.mark.parametrize(("answer", "left"), [("n", [1, 2]), ("y", [])])
async def test_on_a_terminal_they_list_what_they_would_release_and_ask(
    start_host: StartHost, tmp_path: Path, answer: str, left: list[int]
) -> None:
    """A real pseudo-terminal on stdin, as an operator's shell gives it."""
    host, _ = await two_inactive(start_host)
    config = host_config(tmp_path, host.port)
    primary, secondary = pty.openpty()
    argv = [sys.executable, "-m", "krnet", "--config", str(config), "--data-dir", str(tmp_path)]
    process = await asyncio.create_subprocess_exec(
        *argv,
        "node",
        "prune",
        stdin=secondary,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(tmp_path),
    )
    os.close(secondary)
    os.write(primary, f"{answer}\n".encode())
    out, err = await process.communicate()
    os.close(primary)
    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "  runner 1 (runner-a, 127.0.0.1, inactive" in text
    assert "Release these 2 runner(s) on 127.0.0.1:" in text
    assert ("nothing released" in text) == (answer == "n")
    assert ids(host) == left


async def test_commands_say_when_no_host_runs_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert await krnet(tmp_path, port, "node", "prune", "--yes") == 1
    err = capsys.readouterr().err
    assert err == (
        f"krnet: no krnet host is running on this node: nothing listens on 127.0.0.1:{port} "
        "(join_port); start `krnet serve` (it owns the record and the kernel)\n"
    )


async def test_a_host_restarted_after_a_release_does_not_adopt_the_id_back(
    start_host: StartHost, tmp_path: Path
) -> None:
    host, _ = await two_inactive(start_host)
    await release(host, runner="2")
    await host.service.stop()
    again = await start_host(data_dir=host.data_dir)
    assert again.dataplane.calls[:2] == [("released", [2]), ("reconcile", [1])]
    await join_once(again.port, hostname="runner-z")  # takes id 2: no longer released
    assert again.store.released_ids() == []
