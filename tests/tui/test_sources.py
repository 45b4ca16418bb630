"""The remote view: a live host's whole node, as the TUI shows it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from krnet.commands.tui import remote_source
from krnet.core.model.settings import LoadedSettings, Settings
from krnet.tui.app import KrnetApp
from tests.protocol.peers import TOKEN, RunningHost, join_once
from tests.tui.support import NEVER, ready
from tests.tui.test_app import column

ROOT = Path(__file__).resolve().parents[2]


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
