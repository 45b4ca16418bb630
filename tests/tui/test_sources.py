"""The remote view: a live host's status and snapshot, or its record alone, as the TUI shows it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

from krnet.core.model.settings import LoadedSettings, Settings
from krnet.core.observe.diagnose.engine import diagnose
from krnet.core.observe.status import overlay_status
from krnet.tui.app import KrnetApp
from krnet.tui.sources import remote_source, snapshot_from_status
from tests.protocol.peers import TOKEN, RunningHost, join_once
from tests.tui.support import NEVER, ready, snapshot
from tests.tui.test_app import column

ROOT = Path(__file__).resolve().parents[2]


def remote_status(name: str) -> tuple[dict[str, object], object]:
    local = snapshot(name)
    runners = list(local.runners)
    runners[1] = dataclasses.replace(runners[1], observed={**runners[1].observed, "mtu": 1400})
    status = overlay_status(
        mode="host",
        settings=local.settings,
        runners=runners,
        now=local.taken_at,
        runner_timeout=local.settings.runner_timeout,
    )
    return status, local


def test_status_without_snapshot_gives_the_record_view() -> None:
    status, local = remote_status("mixed_host")
    remote = snapshot_from_status(status, local.taken_at, "192.0.2.1:8470")
    assert [r.runner_id for r in remote.runners] == [1, 2, 3, 4, 5]
    assert [r.status for r in remote.runners] == [r.status for r in local.runners]
    assert remote.settings.overlay_mtu == 1450 and remote.settings.overlay_vxlan_id == 100
    assert remote.hostname == "192.0.2.1:8470" and not remote.links
    checks = diagnose(remote)
    skipped = [c.detail for c in checks if c.check == "read_state"]
    assert len(skipped) == 4 and skipped[0].startswith("could not read kernel:")
    names = {c.check for c in checks}
    assert not names & {"tunnels", "firewall", "ip_forward", "host_reachable_address"}
    reported = [c for c in checks if c.check == "reported_mismatch"]
    assert [c.runner_id for c in reported] == [2] and "1400" in reported[0].detail
    silent = [c.runner_id for c in checks if c.check == "runner_silent"]
    assert silent == [3]


def remote(host: RunningHost) -> tuple[str, LoadedSettings]:
    """The address of a live host and a client's settings holding its token."""
    settings = Settings(join_token=TOKEN, handshake_timeout=60.0)
    return f"127.0.0.1:{host.port}", LoadedSettings(settings, data_dir=host.data_dir / "client")


async def test_remote_source_gives_the_host_whole_node(host: RunningHost) -> None:
    await join_once(host.port, hostname="runner-a")
    node = await asyncio.to_thread(remote_source(*remote(host)))
    assert [r.hostname for r in node.runners] == ["runner-a"]
    assert "lo" in node.links and node.hostname == socket.gethostname()
    assert not [error for error in node.errors if error.startswith("kernel:")]


async def test_tui_on_a_remote_host_shows_its_interfaces(host: RunningHost) -> None:
    await join_once(host.port, hostname="runner-a")
    app = KrnetApp(remote_source(*remote(host)), NEVER, "remote")
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("3")
        assert "lo" in column(app, "interfaces", "NAME")
        await pilot.press("2")
        assert [name.strip() for name in column(app, "runners", "RUNNER")] == ["runner-a"]


def test_tui_command_refuses_without_a_terminal() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "krnet", "tui"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("krnet: krnet tui needs a terminal")
