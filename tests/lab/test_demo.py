"""The README's first command, as a user runs it: the built zipapp's `krnet demo --headless`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import require_privileged, require_zipapp

pytestmark = [pytest.mark.privileged, pytest.mark.docker]

STEPS = (
    "host welcomes both runners",
    "host tunnels vxkr1, vxkr2 with VNIs 101, 102",
    "containers on both runners",
    "container on runner 1 -> container on runner 2",
    "container on runner 1 -> host at 10.0.0.1",
    "full-MTU packet with DF set across runners",
    "container -> internet through its runner's NAT",
)


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}


def test_demo_proves_every_path_and_leaves_nothing_behind() -> None:
    require_privileged("ip", "nsenter", "unshare", "iptables", "ping", "dockerd", "docker")
    zipapp = require_zipapp()
    result = subprocess.run(
        [sys.executable, str(zipapp), "demo", "--headless"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in STEPS:
        assert f"[ OK ] {step}" in result.stdout, result.stdout
    assert "kohakuriver-overlay" in result.stdout  # the report: node overlay on the demo host
    prefix = re.search(r"creating network namespaces \((krt\w+)\*\)", result.stdout)
    assert prefix, result.stdout
    assert not {ns for ns in namespaces() if ns.startswith(prefix.group(1))}
