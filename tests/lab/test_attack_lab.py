"""Attacks that need namespaces: what an operator is shown of a rogue's VXLAN frames.

tests/lab/test_firewall.py and test_cluster.py prove the port guard drops a rogue's frames;
this test proves the figure krnet shows for them (the TUI's firewall view, from the same
snapshot `krnet doctor` reads) is exactly the kernel's count.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from krnet.core.dataplane.firewall import FirewallPlan, ensure_firewall
from krnet.lab.namespaces import Lab
from tests.lab.test_firewall import ROGUE, UDP, iptables, packets, wait_for
from tests.support import require_privileged

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]
SHOWN = """
from krnet.config import load_settings
from krnet.core.observe.gather import gather_snapshot
from krnet.tui.firewall_view import guard_summary
from krnet.tui.model import ViewData
print(guard_summary(ViewData.of(gather_snapshot(load_settings(mode="host")))).plain)
"""


def test_the_dropped_figure_is_the_kernel_count_of_a_rogues_frames(
    lab: Lab, tmp_path: Path
) -> None:
    require_privileged("iptables", "iptables-save")
    host = lab.add_node("h", "192.0.2.1/24")
    rogue = lab.add_node("x", "192.0.2.66/24")
    plan = FirewallPlan("host", "10.0.0.0/8", 4789, True, ["192.0.2.2"], ["vxkr1"])
    ensure_firewall(plan, iptables(host))

    rogue.run([sys.executable, "-c", ROGUE, "192.0.2.1", "4789", "101", "7"])
    drop = f"{UDP} -j DROP"
    wait_for("7 drops", lambda: packets(host, "filter", "KRNET-VXLAN", drop) >= 7)
    assert packets(host, "filter", "KRNET-VXLAN", drop) == 7

    env = {key: value for key, value in os.environ.items() if not key.startswith("KRNET_")}
    env |= {"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "KRNET_DATA_DIR": str(tmp_path)}
    shown = host.run([sys.executable, "-c", SHOWN], env=env).stdout
    # the record holds no runner, so the allowed peer is also named as drift
    assert shown.strip() == (
        "✖ port guard on UDP 4789: 1 peer(s) allowed · 7 dropped · allow-list drift: 1 extra"
    )
