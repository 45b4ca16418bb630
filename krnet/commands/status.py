"""`krnet node overlay`: this node's allocations (or a remote host's), as a table or JSON."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from krnet.config import load_settings
from krnet.core.model.plan import HOST_DEVICE
from krnet.core.model.settings import Settings
from krnet.core.observe.status import (
    overlay_status,
    probe_extra,
    render_overlay_table,
    runner_settings,
)
from krnet.core.record import load_runners
from krnet.core.record.reader import database_path, read_runner_state


def run_node_overlay(args: argparse.Namespace) -> int:
    """Print the overlay status object (docs/design.md), or the `kohakuriver node overlay` table."""
    loaded = load_settings(args)
    settings = loaded.settings
    if args.connect:
        from krnet.core.protocol.client import fetch_remote_status

        status = fetch_remote_status(args.connect, settings, loaded.data_dir)
    else:
        now = datetime.now(timezone.utc)
        state = read_runner_state(loaded.data_dir) if settings.mode == "runner" else None
        status = overlay_status(
            mode=settings.mode,
            settings=settings,
            runners=load_runners(database_path(loaded.data_dir)),
            now=now,
            runner_timeout=settings.runner_timeout,
            extra=probe_extra(loaded.data_dir, settings, now) if settings.mode == "host" else None,
            runner_state=state,
        )
        settings = runner_settings(settings, state)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_overlay_table(status, bridge=_bridge(status, settings)), end="")
    return 0


def _bridge(status: dict[str, object], settings: Settings) -> str:
    """The device holding the overlay address: `kohaku-host` on a host, the bridge on a runner."""
    return settings.overlay_bridge_name if status.get("mode") == "runner" else HOST_DEVICE
