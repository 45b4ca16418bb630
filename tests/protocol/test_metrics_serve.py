"""`krnet serve` with `metrics_bind`: the listener comes up beside the join service, answers on
loopback while runners join, and goes away with serve (no root: the overlay is off, so the host's
data plane is the null one and the record is real)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.messages import JsonValue, Welcome
from tests.protocol.peers import TOKEN, free_port, spawn_serve, stop_serve, wait_for_port
from tests.support import http_get as get


async def test_serve_answers_metrics_health_and_readiness_and_stops_with_them(
    tmp_path: Path,
) -> None:
    join_port, metrics_port = free_port(), free_port()
    settings = {
        "mode": "host",
        "join_bind": "127.0.0.1",
        "join_port": join_port,
        "metrics_bind": f"127.0.0.1:{metrics_port}",
    }
    process = spawn_serve(tmp_path, "host", settings)
    try:
        await wait_for_port(join_port, process)
        await wait_for_port(metrics_port, process)
        join: dict[str, JsonValue] = {
            "hostname": "r1",
            "physical_ip": "127.0.0.1",
            "identity": "a" * 32,
            "vxlan_id": 100,
            "vxlan_port": 4789,
            "mtu": 1450,
        }
        connection = await HostConnection.open("127.0.0.1", join_port, TOKEN, timeout=10)
        await connection.send_first("join", join)
        await connection.receive(Welcome)
        status, body = await asyncio.to_thread(get, metrics_port, "/metrics")
        assert status == 200
        assert "krnet_joins_total 1.0" in body
        assert 'krnet_runners{status="active"} 1.0' in body
        assert await asyncio.to_thread(get, metrics_port, "/healthz") == (200, "ok\n")
        # overlay off: no tunnel is due, so the node is ready
        assert await asyncio.to_thread(get, metrics_port, "/readyz") == (200, "ready\n")
        await connection.close()
    finally:
        code, log = stop_serve(process)
    assert code == 0, log
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", metrics_port)) != 0  # gone with serve
