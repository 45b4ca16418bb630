"""The DF probe through a real VXLAN tunnel: it passes, it finds an MTU black hole, and a
blocked VXLAN port; diagnosis names each from the probe's own results."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from krnet.core.dataplane.probe import ProbeBook, ProbeOutcome
from krnet.core.observe.diagnose.engine import diagnose
from krnet.lab.namespaces import Lab, Node
from tests.unit.test_diagnose import snapshot

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json; from krnet.core.dataplane.probe import ProbeTarget, send_probes; "
    "print(json.dumps([o.__dict__ for o in send_probes("
    "[ProbeTarget(1, 'vxkr1', '10.1.0.1')], 1450, timeout=1.0)]))"
)


def _tunnel(node: Node, name: str, local: str, remote: str, address: str) -> None:
    node.run(
        [
            "ip",
            "link",
            "add",
            name,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            "101",
            "local",
            local,
            "remote",
            remote,
            "dstport",
            "4789",
            "nolearning",
        ]
    )
    node.run(["ip", "addr", "add", address, "dev", name])
    node.run(["ip", "link", "set", name, "up"])


@pytest.fixture
def tunnel(lab: Lab) -> tuple[Node, Node]:
    hub = lab.add_node("hub", "192.0.2.1/24")
    runner = lab.add_node("r1", "192.0.2.11/24")
    _tunnel(hub, "vxkr1", "192.0.2.1", "192.0.2.11", "10.1.0.254/16")
    _tunnel(runner, "vxlan0", "192.0.2.11", "192.0.2.1", "10.1.0.1/16")
    return hub, runner


def probe(hub: Node) -> ProbeOutcome:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = hub.run([sys.executable, "-c", PROBE], env=env).stdout
    (outcome,) = json.loads(out)
    return ProbeOutcome(**outcome)


def diagnosed(outcome: ProbeOutcome) -> list[tuple[str, str]]:
    book = ProbeBook()
    base = snapshot("healthy_host")
    book.record_all([outcome] * 3, base.taken_at)
    found = diagnose(dataclasses.replace(base, probes=book.results()))
    return [(c.status, c.detail) for c in found if c.check == "probe"]


def test_probe_passes_a_healthy_tunnel(tunnel: tuple[Node, Node]) -> None:
    outcome = probe(tunnel[0])
    assert outcome.full_rtt_ms is not None and outcome.small_rtt_ms is not None
    assert diagnosed(outcome)[0][0] == "pass"


def test_probe_finds_an_mtu_black_hole(tunnel: tuple[Node, Node]) -> None:
    hub, runner = tunnel
    runner.run(["ip", "link", "set", "eth0", "mtu", "1400"])  # the underlay shrank on one side
    outcome = probe(hub)
    assert outcome.full_rtt_ms is None and outcome.small_rtt_ms is not None
    ((status, detail),) = diagnosed(outcome)
    assert status == "fail" and "MTU black hole on vxkr1" in detail


def test_probe_finds_a_blocked_vxlan_port(tunnel: tuple[Node, Node]) -> None:
    hub, runner = tunnel
    runner.run(["iptables", "-A", "INPUT", "-p", "udp", "--dport", "4789", "-j", "DROP"])
    outcome = probe(hub)
    assert outcome.full_rtt_ms is None and outcome.small_rtt_ms is None
    ((status, detail),) = diagnosed(outcome)
    assert status == "fail" and "UDP 4789 is blocked" in detail
