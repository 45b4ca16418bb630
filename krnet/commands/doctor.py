"""`krnet doctor [--json] [--probe]`: a line per check, with its fix; exit 1 on any failure."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from krnet.core.model.text import printable
from krnet.core.observe.diagnose.check import FAIL, Check, Status

LABELS: dict[Status, str] = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def run(args: argparse.Namespace) -> int:
    """Gather this node's state once, diagnose it, print the verdicts."""
    from krnet.config import load_settings
    from krnet.core.observe.diagnose.engine import diagnose
    from krnet.core.observe.gather import gather_snapshot

    snapshot = gather_snapshot(load_settings(args), probe=args.probe)
    checks = diagnose(snapshot)
    if args.json:
        json.dump([check.to_json() for check in checks], sys.stdout, indent=2)
        print()
    else:
        print_checks(checks, sys.stdout)
    return 1 if any(check.status == FAIL for check in checks) else 0


def print_checks(checks: Sequence[Check], out: TextIO) -> None:
    """`PASS check: detail`, and `  fix: ...` under each problem (details quote hostnames and
    heartbeats, which came from the network: escaped)."""
    for check in checks:
        print(f"{LABELS[check.status]} {check.check}: {printable(check.detail)}", file=out)
        if check.fix:
            print(f"  fix: {printable(check.fix)}", file=out)
