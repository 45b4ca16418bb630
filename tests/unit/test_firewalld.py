"""firewalld's trusted zone, against a recorded fake `firewall-cmd` on PATH.

These need no root and no D-Bus, so they run everywhere; tests/lab/test_firewalld_lab.py proves
the same code against a real firewalld in a lab namespace. They put an executable
`firewall-cmd` in a temporary directory at the front of PATH. It records every argv it gets and
answers as firewalld 1.x does (`--state` prints "running" or "not running" with exit 252,
`--list-interfaces` prints the zone's interfaces on one line, `--list-all` a zone's settings,
`--get-zone-of-interface` "no zone" with exit 2 for an unbound link, changes print "success"),
keeping two zones (public, the default, and trusted) in files. What is proven is the commands
krnet sends and how it reads the answers, not firewalld itself.
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
from tests.unit.test_firewall_rules import FakeIpSet

FAKE = """\
import json, os, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_FIREWALLD_DIR"])
with open(state / "calls.jsonl", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
ZONES = ("public", "trusted")


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def interfaces_file(zone):
    return state / ("trusted" if zone == "trusted" else f"{zone}.interfaces")


def interfaces(zone):
    path = interfaces_file(zone)
    return path.read_text().split() if path.exists() else []


def list_all(zone, permanent):
    openings = lines(state / f"{zone}.{'permanent' if permanent else 'openings'}")
    ports = [o for o in openings if not o.startswith("rule ")]
    rules = [o for o in openings if o.startswith("rule ")]
    print(zone + (" (default)" if zone == "public" else ""))
    print("  target: default")
    print("  interfaces: " + ("" if permanent else " ".join(interfaces(zone))))
    print("  ports: " + " ".join(ports + ["8470/tcp"]))
    print("  rich rules: ")
    for rule in rules:
        print("\\t" + rule)
    print()


args = sys.argv[1:]
permanent = args[:1] == ["--permanent"]
args = args[1:] if permanent else args
if args == ["--state"]:
    running = os.environ.get("FAKE_FIREWALLD_STATE", "running") == "running"
    print("running" if running else "not running")
    sys.exit(0 if running else 252)
if args == ["--get-default-zone"]:
    print("public")
    sys.exit(0)
if args == ["--list-all-zones"]:
    for zone in ZONES:
        list_all(zone, permanent)
    sys.exit(0)
if args[0].startswith("--get-zone-of-interface="):
    name = args[0].partition("=")[2]
    zone = next((z for z in ZONES if name in interfaces(z)), None)
    print(zone or "no zone")
    sys.exit(0 if zone else 2)
zone_name = args[0].partition("=")[2]
if not args[0].startswith("--zone=") or zone_name not in ZONES:
    print("Error: INVALID_ZONE", file=sys.stderr)
    sys.exit(112)
zone = interfaces_file(zone_name)
names = interfaces(zone_name)
openings_file = state / f"{zone_name}.openings"
openings = lines(openings_file)
option, _, name = args[1].partition("=")
if option == "--list-all":
    list_all(zone_name, permanent)
elif option == "--list-interfaces":
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
elif option in ("--add-port", "--add-rich-rule"):
    openings_file.write_text("".join(o + "\\n" for o in [*openings, name]))
    print("success")
elif option in ("--remove-port", "--remove-rich-rule") and name in openings:
    openings_file.write_text("".join(o + "\\n" for o in openings if o != name))
    print("success")
else:
    print(f"Error: UNKNOWN_INTERFACE: {name}", file=sys.stderr)
    sys.exit(19)
for arg in args[2:]:  # several openings at once: --add-rich-rule=A --add-rich-rule=B
    subprocess.run([sys.executable, __file__, args[0], arg], check=True, capture_output=True)
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
    """iptables with nothing in it, ipset faked (never this machine's); everything else
    (firewall-cmd, readlink) runs for real."""
    if argv[0] == "ipset":
        return GUARD_SET_FAKE(argv)
    if argv[0].startswith("iptables"):
        return subprocess.CompletedProcess(argv, 0, "", "")
    return subprocess.run(argv, capture_output=True, text=True, check=False)


GUARD_SET_FAKE = FakeIpSet()


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
        "ipset krnet-vxlan: deleted",
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


def route_via_eth0(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`ip route get` answers that every peer is reached through eth0; the rest runs for real."""
    if argv[:4] == ["ip", "-o", "-force", "-batch"]:
        peers = [line.split()[-1] for line in Path(argv[-1]).read_text().splitlines()]
        routes = "".join(f"{peer} dev eth0 src 192.0.2.1 \\    cache\n" for peer in peers)
        return subprocess.CompletedProcess(argv, 0, routes, "")
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def openings(state: Path, zone: str = "public") -> list[str]:
    path = state / f"{zone}.openings"
    return path.read_text().splitlines() if path.exists() else []


RULE = 'rule family="ipv4" source address="{}" port port="4789" protocol="udp" accept'


def test_vxlan_is_accepted_from_each_member_in_the_zone_of_its_route(firewalld: Path) -> None:
    (firewalld / "public.interfaces").write_text("eth0")
    fw = Firewalld(route_via_eth0)
    assert fw.ensure_vxlan_port(4789, ["192.0.2.11", "192.0.2.12"], anyone=False) == [
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.11 accepted in the public zone (runtime)",
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.12 accepted in the public zone (runtime)",
    ]
    assert openings(firewalld) == [RULE.format("192.0.2.11"), RULE.format("192.0.2.12")]
    assert ["--list-all-zones"] in calls(firewalld)
    assert not [argv for argv in calls(firewalld) if "--permanent" in argv]
    assert fw.ensure_vxlan_port(4789, ["192.0.2.11", "192.0.2.12"], anyone=False) == []
    assert fw.ensure_vxlan_port(4789, ["192.0.2.12"], anyone=False) == [  # runner 1 left
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.11 no longer accepted in the public zone",
    ]
    assert openings(firewalld) == [RULE.format("192.0.2.12")]


def test_an_unbound_underlay_link_means_the_default_zone(firewalld: Path) -> None:
    (firewalld / "trusted").write_text("eth1")
    Firewalld(route_via_eth0).ensure_vxlan_port(4789, ["192.0.2.1"], anyone=False)
    assert openings(firewalld) == [RULE.format("192.0.2.1")]  # public, marked "(default)"


def test_without_the_guard_the_port_is_open_to_anyone(firewalld: Path) -> None:
    fw = Firewalld(route_via_eth0)
    assert fw.ensure_vxlan_port(4789, ["192.0.2.11"], anyone=True) == [
        "firewalld: UDP 4789 (VXLAN) from anyone accepted in the public zone (runtime)",
    ]
    assert openings(firewalld) == ["4789/udp"]
    fw.ensure_vxlan_port(4789, ["192.0.2.11"], anyone=False)  # the guard turned on
    assert openings(firewalld) == [RULE.format("192.0.2.11")]


def test_removal_leaves_what_the_permanent_configuration_holds(firewalld: Path) -> None:
    """The reference tells operators to open 4789/udp permanently: that opening is theirs."""
    (firewalld / "public.permanent").write_text("4789/udp\n")
    (firewalld / "public.openings").write_text(f"4789/udp\n{RULE.format('192.0.2.11')}\n")
    (firewalld / "trusted.openings").write_text(f"{RULE.format('192.0.2.12')}\n4790/udp\n")
    assert Firewalld().remove_vxlan_port(4789) == [
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.11 no longer accepted in the public zone",
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.12 no longer accepted in the trusted zone",
    ]
    assert openings(firewalld) == ["4789/udp"]
    assert openings(firewalld, "trusted") == ["4790/udp"]
    assert Firewalld().remove_vxlan_port(4789) == []


def test_cleanup_takes_the_vxlan_openings_out_too(firewalld: Path) -> None:
    ipt = Iptables(no_iptables)
    ensure_firewall(HOST, ipt)
    assert openings(firewalld) == [RULE.format("192.0.2.2")]
    assert remove_firewall(ipt, vxlan_port=4789) == [
        "ipset krnet-vxlan: deleted",
        "firewalld: UDP 4789 (VXLAN) from 192.0.2.2 no longer accepted in the public zone",
        "firewalld: vxkr1 removed from the trusted zone",
        "firewalld: vxkr2 removed from the trusted zone",
    ]
    assert openings(firewalld) == []


@pytest.fixture(autouse=True)
def system_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded firewall-cmd stands in for firewalld, so a bus address stands in for its
    D-Bus (krnet asks nothing of firewalld on a node with no system bus)."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/krnet-test-bus")
