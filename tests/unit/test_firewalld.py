"""firewalld's trusted zone, against a recorded fake `firewall-cmd` on PATH.

firewalld cannot run on this machine (it needs the system D-Bus service), so these tests put
an executable `firewall-cmd` in a temporary directory at the front of PATH. It records every
argv it gets and answers as firewalld 1.x does (`--state` prints "running" or "not running"
with exit 252, `--list-interfaces` prints the zone's interfaces on one line, changes print
"success"), keeping the trusted zone in a file. What is proven is the commands krnet sends
and how it reads the answers, not firewalld itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from krnet.core.dataplane.firewall import FirewallPlan, Iptables, ensure_firewall, remove_firewall
from krnet.core.dataplane.firewalld import Firewalld
from krnet.errors import FirewallError

FAKE = """\
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_FIREWALLD_DIR"])
with open(state / "calls.jsonl", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
zone = state / "trusted"
names = zone.read_text().split() if zone.exists() else []
args = sys.argv[1:]
if args == ["--state"]:
    running = os.environ.get("FAKE_FIREWALLD_STATE", "running") == "running"
    print("running" if running else "not running")
    sys.exit(0 if running else 252)
if args[0] != "--zone=trusted":
    print("Error: INVALID_ZONE", file=sys.stderr)
    sys.exit(112)
option, _, name = args[1].partition("=")
if option == "--list-interfaces":
    print(" ".join(names))
elif option == "--change-interface" and "/" in name:
    print(f"Error: INVALID_INTERFACE: {name}", file=sys.stderr)
    sys.exit(114)
elif option == "--change-interface":
    zone.write_text(" ".join([*names, name]))
    print("success")
elif option == "--remove-interface" and name in names:
    zone.write_text(" ".join(n for n in names if n != name))
    print("success")
else:
    print(f"Error: UNKNOWN_INTERFACE: {name}", file=sys.stderr)
    sys.exit(19)
"""

HOST = FirewallPlan("host", "10.0.0.0/8", 4789, True, ["192.0.2.2"], ["vxkr1", "vxkr2"])


@pytest.fixture
def firewalld(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake's state directory; `firewall-cmd` on PATH is the fake from here on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "firewall-cmd"
    script.write_text(f"#!{sys.executable}\n{FAKE}")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_FIREWALLD_DIR", str(tmp_path))
    return tmp_path


def calls(state: Path) -> list[list[str]]:
    log = state / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def no_iptables(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """iptables with nothing in it; everything else (firewall-cmd, readlink) runs for real."""
    if argv[0].startswith("iptables"):
        return subprocess.CompletedProcess(argv, 0, "", "")
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_overlay_interfaces_go_to_the_trusted_zone_at_runtime_only(firewalld: Path) -> None:
    fw = Firewalld()
    assert fw.ensure_trusted(["kohaku-overlay", "vxlan0"]) == [
        "firewalld: kohaku-overlay added to the trusted zone (runtime)",
        "firewalld: vxlan0 added to the trusted zone (runtime)",
    ]
    assert calls(firewalld) == [
        ["--state"],
        ["--zone=trusted", "--list-interfaces"],
        ["--zone=trusted", "--change-interface=kohaku-overlay"],
        ["--zone=trusted", "--change-interface=vxlan0"],
    ]
    assert not [argv for argv in calls(firewalld) if "--permanent" in argv]
    assert fw.trusted() == ("kohaku-overlay", "vxlan0")
    assert fw.ensure_trusted(["kohaku-overlay", "vxlan0"]) == []


def test_a_departed_runner_tunnel_leaves_the_zone(firewalld: Path) -> None:
    (firewalld / "trusted").write_text("eth9 vxkr1 vxkr3")
    assert Firewalld().ensure_trusted(["vxkr1", "vxkr2"]) == [
        "firewalld: vxkr2 added to the trusted zone (runtime)",
        "firewalld: vxkr3 removed from the trusted zone",
    ]
    assert (firewalld / "trusted").read_text().split() == ["eth9", "vxkr1", "vxkr2"]
    assert Firewalld().ensure_trusted([]) == [  # the last runner left
        "firewalld: vxkr1 removed from the trusted zone",
        "firewalld: vxkr2 removed from the trusted zone",
    ]


def test_nothing_is_sent_when_firewalld_is_not_running(
    firewalld: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FIREWALLD_STATE", "stopped")
    assert Firewalld().ensure_trusted(["vxlan0"]) == []
    assert calls(firewalld) == [["--state"]]


def test_without_firewall_cmd_installed_firewalld_is_simply_absent(tmp_path: Path) -> None:
    assert not Firewalld(binary=str(tmp_path / "firewall-cmd")).running()


def test_ensure_and_remove_firewall_drive_firewalld_too(firewalld: Path) -> None:
    (firewalld / "trusted").write_text("eth9")
    ipt = Iptables(no_iptables)
    assert ensure_firewall(HOST, ipt)[-2:] == [
        "firewalld: vxkr1 added to the trusted zone (runtime)",
        "firewalld: vxkr2 added to the trusted zone (runtime)",
    ]
    assert remove_firewall(ipt) == [
        "firewalld: vxkr1 removed from the trusted zone",
        "firewalld: vxkr2 removed from the trusted zone",
    ]
    assert (firewalld / "trusted").read_text().split() == ["eth9"]
    assert remove_firewall(ipt) == []


def test_a_refusal_names_the_command_and_what_firewalld_said(firewalld: Path) -> None:
    with pytest.raises(FirewallError) as caught:
        Firewalld().ensure_trusted(["br/0"])
    assert str(caught.value) == (
        "`firewall-cmd --zone=trusted --change-interface=br/0` failed: "
        "Error: INVALID_INTERFACE: br/0; "
        "check `firewall-cmd --get-active-zones` and firewalld's log"
    )
