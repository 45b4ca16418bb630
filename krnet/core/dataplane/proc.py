"""Running external tools (iptables, firewall-cmd) through one injectable function.

Passing another runner points every command somewhere else, e.g. into a network namespace
(`ip netns exec NS ...`) in the lab, without the callers knowing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]

COMMAND_TIMEOUT = 60.0  # seconds; a tool that hangs longer is stuck, not slow


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` here, capturing text output; the caller judges the exit code."""
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT
    )
