"""`krnet tui [--connect HOST[:PORT]]`: the live terminal UI of this node or of a remote host."""

from __future__ import annotations

import argparse
import sys

from krnet.errors import UsageError


def run(args: argparse.Namespace) -> int:
    """Open the TUI on this node's state, or on a remote host's authenticated `status`."""
    from krnet.config import load_settings
    from krnet.tui.sources import local_source, remote_source

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
