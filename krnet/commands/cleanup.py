"""`krnet cleanup`: remove every link, rule and Docker network krnet made on this node."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from krnet.config import load_settings
from krnet.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from krnet.core.model.settings import LoadedSettings


def run(args: argparse.Namespace) -> int:
    """Remove what krnet made here; a runner first leaves its host (docs/operations.md)."""
    loaded = load_settings(args)
    settings = loaded.settings
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("cleanup removes krnet's tunnels, rules and networks: add --yes")
        answer = input("Remove krnet's tunnels, firewall rules and Docker networks here? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing removed")
            return 0
    if settings.mode == "runner" and settings.overlay_enabled:
        print(_leave(loaded))
    from krnet.core.dataplane.cleanup import cleanup_node

    done = cleanup_node(settings)
    for line in done:
        print(line)
    print("krnet cleanup: done" if done else "krnet cleanup: nothing of krnet's was here")
    return 0


def _leave(loaded: LoadedSettings) -> str:
    """A runner first gives its id back, so the host (and every peer) forgets it at once."""
    from krnet.core.control.leave import leave_host
    from krnet.core.protocol.token import read_token

    try:
        token = read_token(loaded.settings, loaded.data_dir)
    except ConfigError as exc:
        return f"could not tell the host that this runner leaves: {exc}"
    return leave_host(loaded.settings, loaded.data_dir, token)
