"""`krnet tui [--connect HOST[:PORT]]`: the live terminal UI of this node or of a remote host."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from krnet.errors import KrnetError, UsageError

if TYPE_CHECKING:
    from krnet.core.model.settings import LoadedSettings
    from krnet.core.model.snapshot import NodeSnapshot


def run(args: argparse.Namespace) -> int:
    """Open the TUI on this node's state, or on a remote host's authenticated `status`."""
    from krnet.config import load_settings

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "krnet tui needs a terminal: in scripts use `krnet doctor --json` or "
            "`krnet node overlay --json`"
        )
    loaded = load_settings(args)
    settings = loaded.settings
    if args.connect:
        from krnet.core.protocol.client import parse_address

        host, port = parse_address(args.connect, settings.join_port)
        source = remote_source(args.connect, loaded)
        where = f"remote {host}:{port}"
    else:
        source = local_source(loaded)
        where = f"local {settings.mode}"
    from krnet.tui.app import KrnetApp

    KrnetApp(source, settings.tui_refresh_interval, where).run()
    return 0


def local_source(loaded: LoadedSettings) -> Callable[[], NodeSnapshot]:
    """This node, read directly each time (needs root for links, rules and sysctls)."""
    from krnet.core.observe.gather import gather_snapshot

    return lambda: gather_snapshot(loaded, events=True)


def remote_source(address: str, loaded: LoadedSettings) -> Callable[[], NodeSnapshot]:
    """A remote host at HOST[:PORT], its whole node through the authenticated `snapshot`."""
    from krnet.core.protocol.client import fetch_remote_snapshot

    def fetch() -> NodeSnapshot:
        _status, whole = fetch_remote_snapshot(address, loaded.settings, loaded.data_dir)
        if whole is None:
            raise KrnetError(f"the host at {address} sent no snapshot")
        return whole

    return fetch
