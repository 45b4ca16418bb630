"""The `ip -batch` script of a batch of tunnels and the `ip -j` read-back, without root.

The lab tests (tests/lab/test_scale.py, test_scale_wide.py) prove them on real tunnels.
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Interface
from pathlib import Path

from krnet.core.dataplane.interfaces import VxlanSpec
from krnet.core.dataplane.netlink.batch import build_tunnels, create_lines, read_routes_json
from krnet.core.model.node_state import RouteInfo, VxlanInfo

SPEC = VxlanSpec(
    vni=4195,
    local="192.0.2.1",
    remote="198.51.100.7",
    port=4789,
    mtu=1450,
    address=IPv4Interface("10.255.240.254/20"),
    mac="02:6b:72:aa:bb:cc",
)
DUMP = {  # `ip -j -s -d addr show dev vxkr4095` after the script ran, trimmed
    "ifindex": 9,
    "ifname": "vxkr4095",
    "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
    "mtu": 1450,
    "address": "02:6B:72:AA:BB:CC",
    "linkinfo": {
        "info_kind": "vxlan",
        "info_data": {"id": 4195, "remote": "198.51.100.7", "local": "192.0.2.1", "port": 4789},
    },
    "addr_info": [
        {"family": "inet", "local": "10.255.240.254", "prefixlen": 20},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
    ],
    "stats64": {"rx": {"bytes": 10, "packets": 1}, "tx": {"bytes": 20, "packets": 2}},
}


def test_one_tunnel_is_three_lines_mac_and_mtu_before_the_type() -> None:
    assert create_lines("vxkr4095", SPEC) == [
        "link add vxkr4095 mtu 1450 address 02:6b:72:aa:bb:cc type vxlan id 4195 "
        "remote 198.51.100.7 local 192.0.2.1 dstport 4789 nolearning",
        "addr add 10.255.240.254/20 dev vxkr4095",
        "link set vxkr4095 up",
    ]


def test_a_batch_is_one_script_and_reads_back_only_its_links() -> None:
    seen: list[list[str]] = []

    def ip(argv: list[str]) -> subprocess.CompletedProcess[str]:
        seen.append(argv)
        if "-batch" in argv:
            assert len(Path(argv[-1]).read_text().splitlines()) == 6
            return subprocess.CompletedProcess(argv, 1, "", "Command failed -:4\n")
        if argv[-1] == "vxkr4095":
            return subprocess.CompletedProcess(argv, 0, json.dumps([DUMP]), "")
        return subprocess.CompletedProcess(argv, 1, "", 'Device "vxkr7" does not exist.\n')

    built = build_tunnels({"vxkr4095": SPEC, "vxkr7": SPEC}, ip)
    assert list(built) == ["vxkr4095"]  # vxkr7 goes the one-link way, which names the refusal
    link = built["vxkr4095"]
    assert (link.up, link.mtu, link.mac, link.addresses) == (
        True,
        1450,
        "02:6b:72:aa:bb:cc",
        ("10.255.240.254/20",),
    )
    assert link.vxlan == VxlanInfo(4195, "192.0.2.1", "198.51.100.7", 4789, learning=False)
    assert (link.rx_packets, link.tx_bytes) == (1, 20)
    assert [argv[1:4] for argv in seen] == [
        ["-force", "-batch", seen[0][3]],
        *[["-j", "-s", "-d"]] * 2,
    ]


def test_routes_read_back_as_the_main_tables_unicast_routes() -> None:
    routes = [
        {"type": "blackhole", "dst": "10.8.0.0/16"},
        {"dst": "10.9.9.9", "dev": "eth0"},
        {"dst": "default", "gateway": "192.0.2.254", "dev": "eth0"},
    ]

    def ip(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, json.dumps(routes), "")

    assert read_routes_json(ip) == (
        RouteInfo("10.9.9.9/32", None, "eth0"),
        RouteInfo("default", "192.0.2.254", "eth0"),
    )
