"""Running external tools (iptables, firewall-cmd) through one injectable function.

Passing another runner points every command somewhere else, e.g. into a network namespace
(`ip netns exec NS ...`) in the lab, without the callers knowing.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]

COMMAND_TIMEOUT = 60.0  # seconds; a tool that hangs longer is stuck, not slow


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` here, capturing text output; the caller judges the exit code."""
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT
    )


@contextmanager
def script_file(lines: Sequence[str], prefix: str) -> Iterator[str]:
    """`lines` in a private temporary file, for tools that read a script from a path (the
    runner passes no stdin); removed afterwards."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".txt")
    try:
        with os.fdopen(fd, "w") as script:
            script.write("\n".join(lines) + "\n")
        yield path
    finally:
        os.unlink(path)
