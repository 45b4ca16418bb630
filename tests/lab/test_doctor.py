"""`krnet doctor` inside a lab node: real state read back, JSON form, exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from krnet.lab.namespaces import Lab, Node

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]


def doctor(node: Node, data_dir: Path, *flags: str) -> tuple[int, str]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("KRNET_")},
        "PYTHONPATH": str(ROOT),
        "KRNET_DATA_DIR": str(data_dir),
        "KRNET_MODE": "host",
        "KRNET_OVERLAY_ENABLED": "true",
        "KRNET_HOST_REACHABLE_ADDRESS": node.address,
        "HOME": str(data_dir),
    }
    result = node.run([sys.executable, "-m", "krnet", "doctor", *flags], check=False, env=env)
    return result.returncode, result.stdout


def test_doctor_reads_a_bare_node_and_names_each_fix(lab: Lab, tmp_path: Path) -> None:
    node = lab.add_node("host", "192.0.2.1/24")
    node.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    code, out = doctor(node, tmp_path, "--json")
    checks = {check["check"]: check for check in json.loads(out)}
    assert code == 1
    assert checks["host_reachable_address"]["status"] == "pass"
    assert checks["ip_forward"] == {
        "check": "ip_forward",
        "status": "fail",
        "detail": "net.ipv4.ip_forward is 0: this node does not route overlay traffic",
        "fix": "sysctl -w net.ipv4.ip_forward=1 (krnet serve sets it on start)",
    }
    assert checks["underlay_mtu"]["status"] == "pass" and "eth0" in checks["underlay_mtu"]["detail"]
    assert checks["firewall"]["status"] == "fail"  # nothing applied yet: the jumps are missing

    node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    code, out = doctor(node, tmp_path)
    assert code == 1
    assert "PASS ip_forward: net.ipv4.ip_forward is 1" in out.splitlines()
    assert "  fix: iptables -t filter -I FORWARD 1 -j KRNET-FORWARD" in out
