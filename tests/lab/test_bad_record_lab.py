"""The kernel's side of problem 4, in a lab namespace: the host plane's reconcile over real
netlink, with one record holding a multicast `physical_ip` (stored before the schema refused
it) among good ones. The refusal is the kernel's; the firewall is a recording stand-in, the
guard's rules being proven in test_firewall.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from krnet.lab.namespaces import Lab

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]

RECONCILE = """
import json
from datetime import datetime, timezone
from krnet.core.dataplane.host_plane import HostPlane
from krnet.core.dataplane.netlink import Netlink
from krnet.core.model.records import RunnerRecord
from krnet.core.model.settings import Settings

class Events:
    seen = []
    def changed(self, changes): self.seen.extend([change, rid] for change, rid in changes)
    def adopted(self, adoption): pass

class Firewall:
    plans = []
    def ensure(self, plan):
        self.plans.append(list(plan.guard_peers))
        return []

def record(rid, ip):
    now = datetime.now(timezone.utc)
    return RunnerRecord(rid, None, f"runner-{rid}", ip, 100 + rid, f"10.{rid}.0.0/16",
                        "active", now, now, 100, 4789, 1450)

settings = Settings(mode="host", overlay_enabled=True, host_reachable_address="192.0.2.1")
firewall, events = Firewall(), Events()
plane = HostPlane(settings, Netlink(), firewall, events, prober=lambda targets, mtu: [])
plane.reconcile([record(1, "192.0.2.11"), record(2, "224.0.0.1"), record(3, "192.0.2.13")])
print(json.dumps({"events": events.seen, "guards": firewall.plans}))
"""


def test_reconcile_goes_past_a_record_the_kernel_refuses(lab: Lab) -> None:
    node = lab.add_node("host", "192.0.2.1/24")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = json.loads(node.run([sys.executable, "-c", RECONCILE], env=env).stdout)
    links = {entry["ifname"] for entry in json.loads(node.run(["ip", "-j", "link"]).stdout)}
    assert {"vxkr1", "vxkr3"} <= links and "vxkr2" not in links
    refused = [(change, rid) for change, rid in out["events"] if "not repaired" in change]
    assert [rid for _, rid in refused] == [2]
    assert out["guards"] == [["192.0.2.11", "192.0.2.13", "224.0.0.1"]]
