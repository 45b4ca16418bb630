"""The host's pieces a join goes through, without a socket: allocation, must-match, the record."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from pathlib import Path

from krnet.core.control.context import HostContext, StoreThread
from krnet.core.control.planes import NullHostDataPlane
from krnet.core.control.session import settings_mismatches
from krnet.core.model.settings import Settings
from krnet.core.protocol.messages import Join
from krnet.core.record.store import Store
from tests.unit.test_status import runner

NOW = datetime(2026, 11, 28, 1, 2, 3, tzinfo=timezone.utc)
JOIN = {
    "type": "join",
    "version": 1,
    "nonce": "0123456789abcdef0123456789abcdef",
    "identity": "fedcba9876543210fedcba9876543210",
    "hostname": "runner-a",
    "physical_ip": "192.0.2.11",
    "vxlan_id": 100,
    "vxlan_port": 4789,
    "mtu": 1450,
    "mac": "a" * 64,
}


def context(store: Store, settings: Settings | None = None) -> HostContext:
    settings = settings or Settings(mode="host", heartbeat_interval=5.0)
    return HostContext(
        settings, settings.plan(), "t", StoreThread(store), NullHostDataPlane(), lambda: NOW
    )


def test_the_allocation_is_the_documented_welcome(tmp_path: Path) -> None:
    """docs/protocol.md's welcome for runner 1 of a default host at 192.0.2.1."""
    joined = runner(1, physical_ip="192.0.2.11")
    with Store.open(tmp_path) as store:
        allocation = context(store).allocation(joined, "192.0.2.1")
    assert allocation.model_dump() == {
        "runner_id": 1,
        "vni": 101,
        "subnet": "10.1.0.0/16",
        "gateway": "10.1.0.1",
        "host_overlay_ip": "10.0.0.1",
        "host_ip_on_subnet": "10.1.0.254",
        "host_physical_ip": "192.0.2.1",
        "runner_physical_ip": "192.0.2.11",
        "overlay_cidr": "10.0.0.0/8",
        "bridge_name": "kohaku-overlay",
        "mtu": 1450,
        "vxlan_port": 4789,
        "vxlan_id": 100,
        "heartbeat_interval": 5.0,
    }


def test_mismatches_name_both_values() -> None:
    join = Join.model_validate({**JOIN, "mtu": 1400, "vxlan_id": 7})
    assert settings_mismatches(Settings(mode="host"), join) == [
        "OVERLAY_VXLAN_ID: runner 7, host 100",
        "OVERLAY_MTU: runner 1400, host 1450",
    ]
    assert settings_mismatches(Settings(mode="host"), Join.model_validate(JOIN)) == []


def test_the_store_thread_runs_every_call_on_one_thread(tmp_path: Path) -> None:
    async def run() -> set[int]:
        with Store.open(tmp_path) as store:
            record = StoreThread(store)
            idents = await asyncio.gather(*(record.run(threading.get_ident) for _ in range(8)))
            await record.event("join", "runner-a joined")
            assert [event.kind for event in store.events()] == ["join"]
            await record.close()
        return set(idents)

    idents = asyncio.run(run())
    assert len(idents) == 1 and threading.get_ident() not in idents
