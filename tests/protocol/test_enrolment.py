"""Per-runner keys over loopback: enrolment, proof at every later join, re-enrolment, refusal."""

from __future__ import annotations

import asyncio
import json
import random
import stat
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from krnet.core.control.agent import KEY_FILE, RunnerAgent, load_runner_key
from krnet.core.control.planes import NullRunnerDataPlane
from krnet.core.model.records import identity_hash
from krnet.core.model.settings import Settings
from krnet.core.protocol.channel import mac_key
from krnet.core.protocol.messages import HeartbeatAck, Welcome
from krnet.errors import ProtocolError
from tests.protocol.peers import (
    RUNNER_KEYS,
    TOKEN,
    RunningHost,
    connect,
    join,
    join_fields,
    run_agent_until_applied,
)

RUNNER_SETTINGS = Settings(mode="runner", host_address="127.0.0.1", handshake_timeout=2.0)


def events(host: RunningHost, kind: str) -> list[str]:
    return [event.message for event in host.store.events() if event.kind == kind]


async def test_enrolment_issues_a_key_the_runner_keeps_0600_and_proves_at_every_join(
    host: RunningHost, tmp_path: Path
) -> None:
    data_dir = tmp_path / "runner"
    settings = replace(RUNNER_SETTINGS, join_port=host.port)
    for _ in range(2):  # enrolment, then a returning join signed with the key
        dataplane = NullRunnerDataPlane()
        agent = RunnerAgent(settings, data_dir, TOKEN, dataplane, rng=random.Random(7))
        await run_agent_until_applied(host, agent)
        host.store.heartbeat(1, now=datetime.now(timezone.utc), observed={})  # forget the heartbeat
    key_file = data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = load_runner_key(data_dir)
    assert key is not None and len(key) == 64
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(f".{KEY_FILE}")] == []
    assert host.store.credentials(agent.identity) == (1, key)
    [record] = host.store.runners()
    assert record.identity_hash == identity_hash(agent.identity)
    assert len(events(host, "join")) == 1 and len(events(host, "rejoin")) == 1
    stored = b"".join(path.read_bytes() for path in host.data_dir.glob("krnet.db*"))
    assert agent.identity.encode() not in stored


async def test_a_runner_that_lost_its_key_is_re_enrolled_only_while_the_old_one_is_inactive(
    host: RunningHost,
) -> None:
    old, reinstalled = uuid.uuid4().hex, uuid.uuid4().hex
    first, allocation = await join(host.port, identity=old, hostname="runner-a")
    try:
        again = await connect(host.port)
        await again.send_first("join", join_fields(reinstalled, "runner-a", "127.0.0.1"))
        with pytest.raises(ProtocolError) as refused:
            await again.receive(Welcome)
        await again.close()
        assert refused.value.code == "already_enrolled"
        text = str(refused.value)
        assert "runner-a is enrolled as runner 1, which is active" in text
        assert "stop krnet on the old one" in text and "another hostname" in text
        assert any("already_enrolled" in message for message in events(host, "refused"))
    finally:
        await first.close()
    host.store.mark_inactive(older_than=datetime.now(timezone.utc) + timedelta(seconds=1))
    _, second = await join(host.port, identity=reinstalled, hostname="runner-a")
    assert second.runner_id == allocation.runner_id == 1
    [message] = events(host, "reenrol")
    assert "runner 1 (runner-a" in message and "re-enrolled" in message
    assert host.store.credentials(old) is None
    assert host.store.credentials(reinstalled) == (1, RUNNER_KEYS[reinstalled])


async def test_the_old_key_no_longer_joins_after_a_re_enrolment(host: RunningHost) -> None:
    old, reinstalled = uuid.uuid4().hex, uuid.uuid4().hex
    (await join(host.port, identity=old, hostname="runner-a"))[0].writer.close()
    host.store.mark_inactive(older_than=datetime.now(timezone.utc) + timedelta(seconds=1))
    (await join(host.port, identity=reinstalled, hostname="runner-a"))[0].writer.close()
    with pytest.raises(ProtocolError, match="auth_failed"):
        await join(host.port, identity=old, hostname="runner-a")


async def test_after_the_welcome_every_message_is_keyed_by_the_runner_key_too(
    host: RunningHost,
) -> None:
    identity = uuid.uuid4().hex
    connection, _ = await join(host.port, identity=identity)
    # a heartbeat signed by the token alone (what any member could forge) is refused
    connection.channel.token = TOKEN
    await connection.send({"type": "heartbeat", "applied": None, "observed": {}})
    line = await asyncio.wait_for(connection.reader.readline(), 30)
    await connection.close()
    assert json.loads(line)["code"] == "auth_failed"
    # with token and key it is answered, and the answer is keyed by both
    connection, _ = await join(host.port, identity=identity)
    await connection.send({"type": "heartbeat", "applied": None, "observed": {}})
    ack = await connection.receive(HeartbeatAck)
    await connection.close()
    assert ack.runner_id == 1
    assert connection.channel.token == mac_key(TOKEN, RUNNER_KEYS[identity])


async def test_a_welcome_carries_a_key_only_at_enrolment(host: RunningHost) -> None:
    identity = uuid.uuid4().hex
    connection = await connect(host.port)
    await connection.send_first("join", join_fields(identity))
    welcome = await connection.receive(Welcome)
    await connection.close()
    assert welcome.runner_key is not None
    RUNNER_KEYS[identity] = welcome.runner_key
    connection = await connect(host.port, mac_key(TOKEN, welcome.runner_key))
    await connection.send_first("join", join_fields(identity))
    returning = await connection.receive(Welcome)
    await connection.close()
    assert returning.runner_key is None and returning.runner_id == welcome.runner_id


async def test_a_runner_that_never_got_its_enrolment_welcome_enrols_again_at_once(
    host: RunningHost,
) -> None:
    identity = uuid.uuid4().hex
    lost = await connect(host.port)
    await lost.send_first("join", join_fields(identity))
    first = await lost.receive(Welcome)  # the runner crashed before it kept this key
    await lost.close()
    connection, again = await join(host.port, identity=identity)
    await connection.close()
    assert again.runner_id == first.runner_id
    assert RUNNER_KEYS[identity] != first.runner_key
    assert host.store.credentials(identity) == (first.runner_id, RUNNER_KEYS[identity])
    assert len(events(host, "reenrol")) == 1
