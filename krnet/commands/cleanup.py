"""`krnet cleanup`: remove every link, rule and Docker network krnet made on this node."""

from __future__ import annotations

import argparse
import sys

from krnet.config import load_settings
from krnet.errors import UsageError


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args).settings
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("cleanup removes krnet's tunnels, rules and networks: add --yes")
        answer = input("Remove krnet's tunnels, firewall rules and Docker networks here? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing removed")
            return 0
    from krnet.core.dataplane.cleanup import cleanup_node

    done = cleanup_node(settings)
    for line in done:
        print(line)
    print("krnet cleanup: done" if done else "krnet cleanup: nothing of krnet's was here")
    return 0
