"""The pure parts of gathering: which link is the underlay, which sysctls are read."""

from __future__ import annotations

import dataclasses

from krnet.core.model.node_state import RouteInfo
from krnet.core.observe.gather import sysctl_keys, underlay_link
from tests.unit.test_diagnose import snapshot


def test_underlay_is_the_link_holding_the_tunnels_local_address() -> None:
    snap = snapshot("healthy_host")
    settings = dataclasses.replace(snap.settings, host_reachable_address="127.0.0.1")
    assert underlay_link(settings, snap.links, snap.routes) == "eth0"


def test_underlay_from_the_configured_address_then_the_default_route() -> None:
    runner = snapshot("healthy_runner")
    links = {name: link for name, link in runner.links.items() if name != "vxlan0"}
    settings = dataclasses.replace(runner.settings, runner_address="198.51.100.1")
    assert underlay_link(settings, links, ()) == "eth0"
    routes = (RouteInfo("default", "198.51.100.254", "eth0"),)
    assert underlay_link(runner.settings, links, routes) == "eth0"
    assert underlay_link(runner.settings, links, ()) is None


def test_sysctl_keys_cover_forwarding_and_each_tunnel() -> None:
    keys = sysctl_keys(["lo", "eth0", "vxkr1", "vxkr12", "vxlan0", "vxkrx"])
    assert keys == [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.vxkr1.rp_filter",
        "net.ipv4.conf.vxkr12.rp_filter",
        "net.ipv4.conf.vxlan0.rp_filter",
    ]
