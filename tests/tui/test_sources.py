"""The remote view: a host's `status` answer turned into a snapshot the TUI can show."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from krnet.core.diagnose import diagnose
from krnet.core.snapshot_json import snapshot_to_json
from krnet.core.status import overlay_status
from krnet.tui.sources import snapshot_from_status
from tests.tui.support import snapshot

ROOT = Path(__file__).resolve().parents[2]


def remote_status(name: str) -> tuple[dict[str, object], object]:
    local = snapshot(name)
    runners = list(local.runners)
    runners[1] = dataclasses.replace(runners[1], observed={**runners[1].observed, "mtu": 1400})
    status = overlay_status(
        mode="host",
        settings=local.settings,
        runners=runners,
        now=local.taken_at,
        runner_timeout=local.settings.runner_timeout,
    )
    return status, local


def test_status_without_snapshot_gives_the_record_view() -> None:
    status, local = remote_status("mixed_host")
    remote = snapshot_from_status(status, local.taken_at, "192.0.2.1:8470")
    assert [r.runner_id for r in remote.runners] == [1, 2, 3, 4, 5]
    assert [r.status for r in remote.runners] == [r.status for r in local.runners]
    assert remote.settings.overlay_mtu == 1450 and remote.settings.overlay_vxlan_id == 100
    assert remote.hostname == "192.0.2.1:8470" and not remote.links
    checks = diagnose(remote)
    skipped = [c.detail for c in checks if c.check == "read_state"]
    assert len(skipped) == 4 and skipped[0].startswith("could not read kernel:")
    names = {c.check for c in checks}
    assert not names & {"tunnels", "firewall", "ip_forward", "host_reachable_address"}
    reported = [c for c in checks if c.check == "reported_mismatch"]
    assert [c.runner_id for c in reported] == [2] and "1400" in reported[0].detail
    silent = [c.runner_id for c in checks if c.check == "runner_silent"]
    assert silent == [3]


def test_status_with_a_snapshot_is_the_whole_node() -> None:
    local = snapshot("mixed_host")
    remote = snapshot_from_status({"snapshot": snapshot_to_json(local)}, local.taken_at, "x")
    assert remote == local


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
