"""krnet.core.dataplane.netlink and sysctl against a real kernel, inside lab namespaces only.

Every outcome is read back with iproute2 (`ip -d -j link`, `ip -j route`), independent of the
code under test; drift is made by hand with `ip` and must be repaired and reported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from krnet.core.dataplane import netlink
from krnet.core.dataplane.netlink import KernelState, open_netlink, read_kernel_state, stable_mac
from krnet.lab.namespaces import Lab, Node

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[2]
HOST_IP = "192.0.2.1"
MTU = 1450
OVERLAY = IPv4Network("10.0.0.0/8")


@contextmanager
def kernel(node: Node) -> Iterator[tuple[Any, KernelState]]:
    """A netlink socket in the node's namespace and a fresh dump of its state."""
    with open_netlink(node.ns) as ipr:
        yield ipr, read_kernel_state(ipr)


def link(node: Node, name: str) -> dict[str, Any]:
    """`ip -d -j link show NAME` with `addresses` (IPv4 CIDRs) from `ip -j addr` added."""
    shown = json.loads(node.run(["ip", "-d", "-j", "link", "show", "dev", name]).stdout)[0]
    addrs = json.loads(node.run(["ip", "-j", "addr", "show", "dev", name]).stdout)[0]
    shown["addresses"] = [
        f"{info['local']}/{info['prefixlen']}"
        for info in addrs["addr_info"]
        if info["family"] == "inet"
    ]
    return shown


def has_dummy(node: Node) -> bool:
    """Whether this kernel can make a dummy link (tried in the node, then removed)."""
    made = node.run(["ip", "link", "add", "probe0", "type", "dummy"], check=False)
    node.run(["ip", "link", "del", "probe0"], check=False)
    return made.returncode == 0


def link_exists(node: Node, name: str) -> bool:
    return node.run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def routes(node: Node) -> list[dict[str, Any]]:
    return json.loads(node.run(["ip", "-j", "route", "show", "table", "main"]).stdout)


def vxlan_data(shown: dict[str, Any]) -> dict[str, Any]:
    assert shown["linkinfo"]["info_kind"] == "vxlan"
    return shown["linkinfo"]["info_data"]


def host_tunnel(ipr: Any, state: KernelState, **overrides: Any) -> list[str]:
    """vxkr1 as the host builds it, with any argument overridden."""
    spec: dict[str, Any] = {
        "vni": 101,
        "local": HOST_IP,
        "remote": "192.0.2.2",
        "port": 4789,
        "mtu": MTU,
        "address": IPv4Interface("10.1.0.254/16"),
        "mac": stable_mac("host", 101),
    }
    spec.update(overrides)
    return netlink.ensure_vxlan(ipr, state, "vxkr1", **spec)


def apply_host_tunnel(node: Node, **overrides: Any) -> list[str]:
    with kernel(node) as (ipr, state):
        return host_tunnel(ipr, state, **overrides)


@pytest.fixture
def node(lab: Lab) -> Node:
    return lab.add_node("host", f"{HOST_IP}/24")


def test_host_device_falls_back_to_a_bridge_only_without_dummy(node: Node) -> None:
    kind = "dummy" if has_dummy(node) else "bridge"
    interface = IPv4Interface("10.0.0.1/8")
    with kernel(node) as (ipr, state):
        created = netlink.ensure_host_device(ipr, state, "kohaku-host", interface, mtu=MTU)
    shown = link(node, "kohaku-host")
    assert shown["linkinfo"]["info_kind"] == kind
    assert shown["addresses"] == ["10.0.0.1/8"]
    assert shown["mtu"] == MTU
    assert "UP" in shown["flags"]
    assert created and created[0].startswith("kohaku-host: created")

    with kernel(node) as (ipr, state):
        assert netlink.ensure_host_device(ipr, state, "kohaku-host", interface, mtu=MTU) == []

    node.run(["ip", "addr", "flush", "dev", "kohaku-host"])
    node.run(["ip", "addr", "add", "10.9.9.9/8", "dev", "kohaku-host"])
    node.run(["ip", "link", "set", "kohaku-host", "down", "mtu", "1300"])
    with kernel(node) as (ipr, state):
        repaired = netlink.ensure_host_device(ipr, state, "kohaku-host", interface, mtu=MTU)
    assert set(repaired) == {
        "kohaku-host: MTU 1300 -> 1450",
        "kohaku-host: up",
        "kohaku-host: address 10.9.9.9/8 removed",
        "kohaku-host: address 10.0.0.1/8 added",
    }
    shown = link(node, "kohaku-host")
    assert (shown["addresses"], shown["mtu"], "UP" in shown["flags"]) == (["10.0.0.1/8"], MTU, True)


def test_host_device_replaces_a_link_of_the_wrong_kind(node: Node) -> None:
    node.run(["ip", "link", "add", "kohaku-host", "type", "veth", "peer", "name", "other0"])
    with kernel(node) as (ipr, state):
        changes = netlink.ensure_host_device(ipr, state, "kohaku-host", IPv4Interface("10.0.0.1/8"))
    assert changes[0] == "kohaku-host: kind veth, not dummy: deleted"
    assert link(node, "kohaku-host")["linkinfo"]["info_kind"] in ("dummy", "bridge")


def test_vxlan_is_created_as_asked_and_converges(node: Node) -> None:
    changes = apply_host_tunnel(node)
    assert changes[0] == "vxkr1: created (VNI 101, local 192.0.2.1, remote 192.0.2.2, port 4789)"
    shown = link(node, "vxkr1")
    data = vxlan_data(shown)
    assert (data["id"], data["local"], data["remote"], data["port"]) == (
        101,
        HOST_IP,
        "192.0.2.2",
        4789,
    )
    assert data["learning"] is False
    assert shown["mtu"] == MTU
    assert shown["address"] == stable_mac("host", 101)
    assert shown["addresses"] == ["10.1.0.254/16"]
    assert "UP" in shown["flags"]
    assert any(route["dst"] == "10.1.0.0/16" and route["dev"] == "vxkr1" for route in routes(node))
    assert apply_host_tunnel(node) == []


def test_vxlan_remote_and_local_change_in_place(node: Node) -> None:
    apply_host_tunnel(node)
    index = link(node, "vxkr1")["ifindex"]

    assert apply_host_tunnel(node, remote="192.0.2.3") == ["vxkr1: remote 192.0.2.2 -> 192.0.2.3"]
    node.run(["ip", "link", "set", "vxkr1", "type", "vxlan", "remote", "192.0.2.9"])
    assert apply_host_tunnel(node, remote="192.0.2.3") == ["vxkr1: remote 192.0.2.9 -> 192.0.2.3"]
    assert apply_host_tunnel(node, remote="192.0.2.3", local=None) == [
        "vxkr1: local 192.0.2.1 -> any"
    ]

    shown = link(node, "vxkr1")
    assert shown["ifindex"] == index, "an endpoint change must not recreate the link"
    assert vxlan_data(shown)["remote"] == "192.0.2.3"
    assert "local" not in vxlan_data(shown)
    assert shown["addresses"] == ["10.1.0.254/16"]


def test_vxlan_drift_by_hand_is_repaired_and_reported(node: Node) -> None:
    apply_host_tunnel(node)
    node.run(["ip", "link", "set", "vxkr1", "mtu", "1400"])
    node.run(["ip", "addr", "flush", "dev", "vxkr1"])
    node.run(["ip", "link", "set", "vxkr1", "type", "vxlan", "learning"])
    assert sorted(apply_host_tunnel(node)) == [
        "vxkr1: MTU 1400 -> 1450",
        "vxkr1: address 10.1.0.254/16 added",
        "vxkr1: learning off",
    ]
    shown = link(node, "vxkr1")
    assert (shown["mtu"], shown["addresses"], vxlan_data(shown)["learning"]) == (
        MTU,
        ["10.1.0.254/16"],
        False,
    )
    assert apply_host_tunnel(node) == []


@pytest.mark.parametrize(("vni", "port"), [(999, 4789), (101, 4790)])
def test_vxlan_with_wrong_vni_or_port_is_recreated_with_the_same_mac(
    node: Node, vni: int, port: int
) -> None:
    apply_host_tunnel(node)
    node.run(["ip", "link", "del", "vxkr1"])
    endpoints = ["dstport", str(port), "remote", "192.0.2.2", "local", HOST_IP]
    node.run(["ip", "link", "add", "vxkr1", "type", "vxlan", "id", str(vni), *endpoints])
    changes = apply_host_tunnel(node)
    assert changes[0] == f"vxkr1: VNI {vni} port {port}, wanted VNI 101 port 4789: deleted"
    shown = link(node, "vxkr1")
    assert (vxlan_data(shown)["id"], vxlan_data(shown)["port"]) == (101, 4789)
    assert shown["address"] == stable_mac("host", 101)
    assert shown["addresses"] == ["10.1.0.254/16"]
    assert apply_host_tunnel(node) == []


def test_recreated_vxlan_keeps_its_mac_without_a_stable_one(node: Node) -> None:
    apply_host_tunnel(node, mac=None)
    before = link(node, "vxkr1")["address"]
    apply_host_tunnel(node, mac=None, vni=150)
    after = link(node, "vxkr1")
    assert vxlan_data(after)["id"] == 150
    assert after["address"] == before


def test_stable_mac_is_deterministic_locally_administered_unicast() -> None:
    mac = stable_mac("bridge", 101)
    first = int(mac.split(":")[0], 16)
    assert mac == stable_mac("bridge", 101)
    assert mac != stable_mac("bridge", 102) != stable_mac("runner", 102)
    assert first & 0b10 and not first & 0b01


def runner_side(ipr: Any, state: KernelState, mac: str, vxlan_mac: str) -> list[str]:
    changes = netlink.ensure_bridge(
        ipr, state, "kohaku-overlay", interface=IPv4Interface("10.1.0.1/16"), mtu=MTU, mac=mac
    )
    return changes + netlink.ensure_vxlan(
        ipr,
        state,
        "vxlan0",
        vni=101,
        local="192.0.2.2",
        remote=HOST_IP,
        port=4789,
        mtu=MTU,
        master="kohaku-overlay",
        mac=vxlan_mac,
    )


def test_bridge_mac_stays_pinned_when_its_port_is_recreated(node: Node) -> None:
    bridge_mac, port_mac = "02:6b:72:ff:ff:ff", "02:00:00:00:00:01"  # the port's is lower
    with kernel(node) as (ipr, state):
        changes = runner_side(ipr, state, bridge_mac, port_mac)
    assert changes[0] == f"kohaku-overlay: created (bridge, MAC {bridge_mac})"
    assert "vxlan0: enslaved to kohaku-overlay" in changes
    bridge = link(node, "kohaku-overlay")
    port = link(node, "vxlan0")
    assert bridge["address"] == bridge_mac
    assert (bridge["addresses"], bridge["mtu"]) == (["10.1.0.1/16"], MTU)
    assert port["master"] == "kohaku-overlay"
    assert port["addresses"] == []

    node.run(["ip", "link", "del", "vxlan0"])
    alone = link(node, "kohaku-overlay")
    assert (alone["address"], alone["mtu"]) == (bridge_mac, MTU), "MAC and MTU must be pinned"
    with kernel(node) as (ipr, state):
        recreated = runner_side(ipr, state, bridge_mac, port_mac)
    assert recreated[0].startswith("vxlan0: created")
    assert link(node, "kohaku-overlay")["address"] == bridge_mac
    assert link(node, "vxlan0")["address"] == port_mac
    assert link(node, "vxlan0")["master"] == "kohaku-overlay"

    node.run(["ip", "link", "set", "kohaku-overlay", "address", "02:11:22:33:44:55"])
    node.run(["ip", "link", "set", "vxlan0", "nomaster"])
    with kernel(node) as (ipr, state):
        assert sorted(runner_side(ipr, state, bridge_mac, port_mac)) == [
            f"kohaku-overlay: MAC 02:11:22:33:44:55 -> {bridge_mac}",
            "vxlan0: enslaved to kohaku-overlay",
        ]
    with kernel(node) as (ipr, state):
        assert runner_side(ipr, state, bridge_mac, port_mac) == []


def test_routes_are_added_replaced_and_go_with_their_link(node: Node) -> None:
    via = IPv4Address("10.1.0.254")
    with kernel(node) as (ipr, state):
        runner_side(ipr, state, stable_mac("bridge", 101), stable_mac("runner", 101))
        added = netlink.ensure_route(ipr, state, OVERLAY, via=via)
        again = netlink.ensure_route(ipr, state, OVERLAY, via=via)
    assert added == ["route 10.0.0.0/8 via 10.1.0.254: added"]
    assert again == []
    overlay_routes = [route for route in routes(node) if route["dst"] == "10.0.0.0/8"]
    assert [(route["gateway"], route["dev"]) for route in overlay_routes] == [
        ("10.1.0.254", "kohaku-overlay")
    ]

    node.run(["ip", "route", "replace", "10.0.0.0/8", "via", "10.1.0.253"])
    with kernel(node) as (ipr, state):
        replaced = netlink.ensure_route(ipr, state, OVERLAY, via=via, dev="kohaku-overlay")
    assert replaced == [
        "route 10.0.0.0/8 via 10.1.0.254 dev kohaku-overlay: "
        "replaced route 10.0.0.0/8 via 10.1.0.253 dev kohaku-overlay"
    ]
    with kernel(node) as (ipr, state):
        removed = netlink.remove_link(ipr, state, "kohaku-overlay")
    assert removed == ["kohaku-overlay: removed"]
    assert not [route for route in routes(node) if route["dst"] == "10.0.0.0/8"]


def test_state_reads_links_addresses_masters_and_routes(node: Node) -> None:
    with kernel(node) as (ipr, state):
        runner_side(ipr, state, stable_mac("bridge", 101), stable_mac("runner", 101))
    with kernel(node) as (_, state):
        tunnel = state.links["vxlan0"]
        bridge = state.links["kohaku-overlay"]
    assert tunnel.vxlan == netlink.VxlanInfo(101, "192.0.2.2", HOST_IP, 4789, learning=False)
    assert (tunnel.kind, tunnel.master, tunnel.mtu, tunnel.up) == ("vxlan", bridge.name, MTU, True)
    assert (bridge.kind, bridge.addresses, bridge.vxlan) == ("bridge", ("10.1.0.1/16",), None)
    assert state.links["eth0"].addresses == (f"{HOST_IP}/24",)
    assert netlink.RouteInfo("10.1.0.0/16", None, "kohaku-overlay") in state.routes
    assert netlink.RouteInfo("192.0.2.0/24", None, "eth0") in state.routes


@pytest.mark.parametrize("name", ["kohaku-overlay", "vxlan0"])
def test_a_link_krnet_did_not_create_is_never_deleted_nor_re_typed(node: Node, name: str) -> None:
    """Proven problem 2 of issue 11: a welcome naming an existing link made the runner delete
    it ("not a bridge: deleted", shown with `wg0`); now the runner refuses and names it."""
    node.run(["ip", "link", "add", name, "type", "veth", "peer", "name", "krpeer0"])
    with kernel(node) as (ipr, state), pytest.raises(netlink.KernelError) as refused:
        runner_side(ipr, state, "02:6b:72:00:00:01", "02:6b:72:00:00:02")
    assert f"{name} (kind veth) exists" in str(refused.value)
    assert "does not delete or re-type it" in str(refused.value)
    assert link(node, name)["linkinfo"]["info_kind"] == "veth"


def test_remove_link_reports_once(node: Node) -> None:
    apply_host_tunnel(node)
    with kernel(node) as (ipr, state):
        assert netlink.remove_link(ipr, state, "vxkr1") == ["vxkr1: removed"]
        assert netlink.remove_link(ipr, state, "vxkr1") == []
    assert not link_exists(node, "vxkr1")


def test_refused_change_names_the_link(node: Node) -> None:
    apply_host_tunnel(node)
    with kernel(node) as (ipr, state), pytest.raises(netlink.KernelError, match="vxkr2"):
        netlink.ensure_vxlan(
            ipr, state, "vxkr2", vni=101, local=HOST_IP, remote="192.0.2.5", port=4789, mtu=MTU
        )


AGENT = """
import json
from ipaddress import IPv4Interface
from krnet.core.dataplane import netlink, sysctl
changes = sysctl.ensure_sysctl("net.ipv4.ip_forward", "1")
with netlink.open_netlink() as ipr:
    state = netlink.read_kernel_state(ipr)
    changes += netlink.ensure_host_device(ipr, state, "kohaku-host", IPv4Interface("10.0.0.1/8"))
print(json.dumps(changes))
"""


def run_agent(node: Node) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return json.loads(node.run([sys.executable, "-c", AGENT], env=env).stdout)


def test_sysctl_and_netlink_work_in_the_current_namespace(node: Node) -> None:
    created = "dummy" if has_dummy(node) else "bridge: this kernel has no dummy driver"
    node.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    assert run_agent(node) == [
        "sysctl net.ipv4.ip_forward: 0 -> 1",
        f"kohaku-host: created ({created})",
        "kohaku-host: up",
        "kohaku-host: address 10.0.0.1/8 added",
    ]
    assert node.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert link(node, "kohaku-host")["addresses"] == ["10.0.0.1/8"]
    assert run_agent(node) == []


def test_read_sysctl_of_a_missing_key_is_none() -> None:
    from krnet.core.dataplane.sysctl import read_sysctl

    assert read_sysctl("net.ipv4.no_such_parameter") is None


def build_host(node: Node, runners: dict[int, str]) -> None:
    node.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    with kernel(node) as (ipr, state):
        netlink.ensure_host_device(ipr, state, "kohaku-host", IPv4Interface("10.0.0.1/8"))
        for runner_id, remote in runners.items():
            vni = 100 + runner_id
            netlink.ensure_vxlan(
                ipr,
                state,
                f"vxkr{runner_id}",
                vni=vni,
                local=node.address,
                remote=remote,
                port=4789,
                mtu=MTU,
                address=IPv4Interface(f"10.{runner_id}.0.254/16"),
                mac=stable_mac("host", vni),
            )


def build_runner(node: Node, runner_id: int, host: str) -> None:
    vni = 100 + runner_id
    with kernel(node) as (ipr, state):
        netlink.ensure_bridge(
            ipr,
            state,
            "kohaku-overlay",
            interface=IPv4Interface(f"10.{runner_id}.0.1/16"),
            mtu=MTU,
            mac=stable_mac("bridge", vni),
        )
        netlink.ensure_vxlan(
            ipr,
            state,
            "vxlan0",
            vni=vni,
            local=node.address,
            remote=host,
            port=4789,
            mtu=MTU,
            master="kohaku-overlay",
            mac=stable_mac("runner", vni),
        )
        netlink.ensure_route(ipr, state, OVERLAY, via=IPv4Address(f"10.{runner_id}.0.254"))


def test_packets_cross_the_overlay_through_the_host(lab: Lab) -> None:
    host = lab.add_node("host", f"{HOST_IP}/24")
    one = lab.add_node("r1", "192.0.2.2/24")
    two = lab.add_node("r2", "192.0.2.3/24")
    build_host(host, {1: one.address, 2: two.address})
    build_runner(one, 1, host.address)
    build_runner(two, 2, host.address)

    ping = ["ping", "-c", "2", "-W", "3", "-M", "do", "-s", str(MTU - 28)]
    across = one.run([*ping, "-I", "10.1.0.1", "10.2.0.1"], check=False)
    to_host = two.run([*ping, "-I", "10.2.0.1", "10.0.0.1"], check=False)
    assert across.returncode == 0, across.stdout + across.stderr
    assert to_host.returncode == 0, to_host.stdout + to_host.stderr
    too_big = one.run([*ping[:-1], str(MTU - 27), "10.2.0.1"], check=False)
    assert too_big.returncode != 0
