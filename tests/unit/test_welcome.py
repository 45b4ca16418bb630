"""A runner's checks of the allocation it is told, and the routing table they read."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from krnet.core.dataplane.routing import ipv4_routes
from krnet.core.model.welcome import Route, check_allocation
from krnet.errors import ProtocolError

UNDERLAY = [
    Route(IPv4Network("0.0.0.0/0"), "eth0", IPv4Address("192.168.88.1")),
    Route(IPv4Network("192.168.88.0/24"), "eth0"),
    Route(IPv4Network("10.0.0.0/8"), "kohaku-overlay", IPv4Address("10.1.0.254")),  # its own
    Route(IPv4Network("10.1.0.0/16"), "kohaku-overlay"),
]
GOOD: dict[str, Any] = {
    "overlay_cidr": "10.0.0.0/8",
    "subnet": "10.1.0.0/16",
    "gateway": "10.1.0.1",
    "host_ip_on_subnet": "10.1.0.254",
    "physical_ips": ("192.168.88.11", "192.168.88.1"),
    "routes": UNDERLAY,
    "own_devices": ("kohaku-overlay", "vxlan0"),
}


def test_the_reference_allocation_passes_beside_the_runners_own_overlay_routes() -> None:
    check_allocation(**GOOD)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"overlay_cidr": "0.0.0.0/0"}, "overlay_cidr 0.0.0.0/0 is not inside a private network"),
        ({"overlay_cidr": "8.0.0.0/7", "subnet": "8.1.0.0/16"}, "not inside a private network"),
        ({"overlay_cidr": "192.168.0.0/16", "subnet": "192.168.1.0/24"}, "overlaps this runner"),
        ({"subnet": "172.16.1.0/24"}, "subnet 172.16.1.0/24 is not a block inside"),
        ({"gateway": "10.2.0.1"}, "gateway 10.2.0.1 is not in subnet"),
        ({"physical_ips": ("10.9.9.9", "192.168.88.1")}, "tunnel end 10.9.9.9 is inside"),
        (
            {"routes": [Route(IPv4Network("0.0.0.0/0"), "eth0", IPv4Address("10.200.0.1"))]},
            "holds the default route's gateway 10.200.0.1 (dev eth0)",
        ),
    ],
)
def test_a_hostile_allocation_is_one_error_naming_each_problem(
    change: dict[str, Any], named: str
) -> None:
    with pytest.raises(ProtocolError, match="nothing configured") as refused:
        check_allocation(**(GOOD | change))
    assert named in str(refused.value)


def test_the_routing_table_is_read_from_proc_net_route(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0158A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0058A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    assert ipv4_routes(table) == [
        Route(IPv4Network("0.0.0.0/0"), "eth0", IPv4Address("192.168.88.1")),
        Route(IPv4Network("192.168.88.0/24"), "eth0"),
    ]
