"""krnet's firewall in network namespaces, proven with real packets.

Each test applies a plan inside lab namespaces (iptables runs there through `nsenter`), reads
the rules back with its own iptables-save parser, and sends pings or UDP to show what the
rules do: forwarding through Docker-like rules and a DROP policy, a runner's NAT seen from
"the internet", and the VXLAN port guard dropping a rogue's frames before they reach a tunnel.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable

import pytest

from krnet.core.dataplane.firewall import (
    FirewallPlan,
    Iptables,
    ensure_firewall,
    read_allowlist,
    read_rules,
    remove_firewall,
)
from krnet.lab.namespaces import Lab, Node
from tests.support import require_privileged

pytestmark = pytest.mark.privileged

UDP = "-p udp -m udp --dport 4789"
IN_SET = "-m set --match-set krnet-vxlan src"
WAIT = 10.0  # seconds to wait for the kernel to count packets already sent

# Sends COUNT VXLAN datagrams (VNI, broadcast ARP request inside) to ADDRESS:PORT.
ROGUE = """
import socket, sys
address, port, vni, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
header = bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\\0"
mac = bytes.fromhex("020000000066")
arp = bytes.fromhex("0001080006040001") + mac + bytes([10, 1, 0, 99])
arp += bytes(6) + bytes([10, 1, 0, 254])
frame = b"\\xff" * 6 + mac + b"\\x08\\x06" + arp
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    sock.sendto(header + frame, (address, port))
"""


@pytest.fixture(autouse=True)
def tools() -> None:
    require_privileged("iptables", "iptables-save", "ping")


def iptables(node: Node) -> Iptables:
    """krnet's iptables layer pointed into `node`'s namespace."""
    return Iptables(lambda argv: node.run(argv, check=False))


def saved(node: Node) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(table, chain) -> [(rule, packets)] from iptables-save, parsed without krnet's code."""
    chains: dict[tuple[str, str], list[tuple[str, int]]] = {}
    table = ""
    for line in node.run(["iptables-save", "-c"]).stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif match := re.fullmatch(r":(\S+) \S+ \[\d+:\d+\]", line):
            chains.setdefault((table, match[1]), [])
        elif match := re.fullmatch(r"\[(\d+):\d+\] -A (\S+) (.*)", line):
            chains.setdefault((table, match[2]), []).append((match[3], int(match[1])))
    return chains


def rules(node: Node, table: str, chain: str) -> list[str]:
    return [spec for spec, _ in saved(node).get((table, chain), [])]


def packets(node: Node, table: str, chain: str, spec: str) -> int:
    return dict(saved(node)[(table, chain)])[spec]


def wait_for(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT} s")
        time.sleep(0.05)


def ping(node: Node, address: str) -> bool:
    return (
        node.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", address], check=False).returncode == 0
    )


def sh(node: Node, *commands: str) -> None:
    for command in commands:
        node.run(command.split())


def wire(a: Node, a_link: str, a_address: str, b: Node, b_link: str, b_address: str) -> None:
    """A veth pair between two lab namespaces (created inside `a`, never in this machine's)."""
    sh(a, f"ip link add {a_link} type veth peer name {b_link} netns {b.ns}")
    sh(a, f"ip addr add {a_address} dev {a_link}", f"ip link set {a_link} up")
    sh(b, f"ip addr add {b_address} dev {b_link}", f"ip link set {b_link} up")


def test_rules_read_back_exactly_converge_once_and_remove_cleanly(lab: Lab) -> None:
    runner = lab.add_node("rn", "192.0.2.2/24")
    ipt = iptables(runner)
    plan = FirewallPlan("runner", "10.0.0.0/8", 4789, True, ["192.0.2.1"], ["kohaku-overlay"])

    assert len(ensure_firewall(plan, ipt)) == 16  # 14 rule and chain changes, the set, its peer
    assert rules(runner, "filter", "KRNET-FORWARD") == [
        "-s 10.0.0.0/8 -j ACCEPT",
        "-d 10.0.0.0/8 -j ACCEPT",
    ]
    assert rules(runner, "filter", "KRNET-VXLAN") == [
        f"{UDP} {IN_SET} -j ACCEPT",
        f"{UDP} -j DROP",
    ]
    assert rules(runner, "filter", "KRNET-OUTPUT") == [f"{UDP} -j ACCEPT"]
    assert rules(runner, "nat", "KRNET-POSTROUTING") == [
        "-s 10.0.0.0/8 ! -d 10.0.0.0/8 -j MASQUERADE"
    ]
    assert rules(runner, "filter", "FORWARD") == ["-j KRNET-FORWARD"]
    assert rules(runner, "filter", "INPUT") == [f"{UDP} -j KRNET-VXLAN"]
    assert rules(runner, "filter", "OUTPUT") == [f"{UDP} -j KRNET-OUTPUT"]
    assert rules(runner, "nat", "POSTROUTING") == ["-j KRNET-POSTROUTING"]

    # a datagram to the port from a stranger (here: itself) is dropped and counted
    runner.run([sys.executable, "-c", ROGUE, "192.0.2.2", "4789", "101", "3"])
    wait_for("3 drops", lambda: packets(runner, "filter", "KRNET-VXLAN", f"{UDP} -j DROP") >= 3)
    read = {(r.table, r.chain, r.spec): r.packets for r in read_rules(ipt)}
    independent = {
        (table, chain, spec): count
        for (table, chain), entries in saved(runner).items()
        for spec, count in entries
        if "KRNET" in chain or "KRNET" in spec
    }
    assert read == independent
    assert read_allowlist(ipt) == ("192.0.2.1",)

    dropped = packets(runner, "filter", "KRNET-VXLAN", f"{UDP} -j DROP")
    assert ensure_firewall(plan, ipt) == []
    assert packets(runner, "filter", "KRNET-VXLAN", f"{UDP} -j DROP") == dropped

    assert len(remove_firewall(ipt)) == 9  # 8 rule and chain changes, and the set
    assert read_allowlist(ipt) == ()
    assert not [key for key in saved(runner) if "KRNET" in key[1]]
    assert not [
        spec for entries in saved(runner).values() for spec, _ in entries if "KRNET" in spec
    ]
    assert remove_firewall(ipt) == []


def test_forwarding_survives_a_drop_policy_and_verdicts_put_above_krnet(lab: Lab) -> None:
    a = lab.add_node("a", "192.0.2.11/24")
    router = lab.add_node("r", "192.0.2.1/24")
    b = lab.add_node("b", "192.0.2.12/24")
    wire(router, "ov1", "10.1.0.1/16", a, "ov", "10.1.0.2/16")
    wire(router, "ov2", "10.2.0.1/16", b, "ov", "10.2.0.2/16")
    sh(a, "ip route add 10.0.0.0/8 via 10.1.0.1")
    sh(b, "ip route add 10.0.0.0/8 via 10.2.0.1")
    sh(router, "sysctl -qw net.ipv4.ip_forward=1", "iptables -P FORWARD DROP")
    ipt = iptables(router)
    plan = FirewallPlan("host", "10.0.0.0/8", 4789, True, ["192.0.2.11", "192.0.2.12"])

    assert not ping(a, "10.2.0.2"), "FORWARD policy DROP should stop overlay traffic"
    ensure_firewall(plan, ipt)
    assert ping(a, "10.2.0.2")
    assert packets(router, "filter", "KRNET-FORWARD", "-s 10.0.0.0/8 -j ACCEPT") > 0

    # What Docker does when it creates a network: its own jumps at the top of FORWARD;
    # here one of them carries a verdict for overlay traffic.
    sh(
        router,
        "iptables -N DOCKER-USER",
        "iptables -A DOCKER-USER -j RETURN",
        "iptables -N DOCKER-FORWARD",
        "iptables -A DOCKER-FORWARD -s 10.0.0.0/8 -j DROP",
        "iptables -I FORWARD 1 -j DOCKER-FORWARD",
        "iptables -I FORWARD 1 -j DOCKER-USER",
    )
    assert not ping(a, "10.2.0.2"), "the foreign DROP should now come first"
    assert ensure_firewall(plan, ipt) == [
        "filter FORWARD: moved jump '-j KRNET-FORWARD' back to position 1 "
        "(first was '-j DOCKER-USER')"
    ]
    assert rules(router, "filter", "FORWARD") == [
        "-j KRNET-FORWARD",
        "-j DOCKER-USER",
        "-j DOCKER-FORWARD",
    ]
    assert rules(router, "filter", "DOCKER-FORWARD") == ["-s 10.0.0.0/8 -j DROP"]
    assert ping(a, "10.2.0.2")
    assert ping(b, "10.1.0.2")


def test_runner_nat_shows_the_runner_address_outside_and_keeps_overlay_sources(lab: Lab) -> None:
    internet = lab.add_internet()  # 198.51.100.1, no route back to 10.0.0.0/8
    runner = lab.add_node("rn", "192.0.2.2/24")
    client = lab.add_node("c", "192.0.2.50/24")
    other = lab.add_node("o", "192.0.2.60/24")  # a container on another runner's subnet
    wire(runner, "ov1", "10.1.0.1/16", client, "ov", "10.1.0.5/16")
    wire(runner, "ov2", "10.2.0.1/16", other, "ov", "10.2.0.2/16")
    sh(client, "ip route replace default via 10.1.0.1")
    sh(other, "ip route add 10.0.0.0/8 via 10.2.0.1")
    sh(runner, "sysctl -qw net.ipv4.ip_forward=1")
    seen_from_runner = "-s 192.0.2.2/32 -p icmp -j ACCEPT"
    seen_from_overlay = "-s 10.0.0.0/8 -p icmp -j ACCEPT"
    sh(internet, f"iptables -A INPUT {seen_from_runner}", f"iptables -A INPUT {seen_from_overlay}")
    sh(other, "iptables -A INPUT -s 10.1.0.5/32 -p icmp -j ACCEPT")
    plan = FirewallPlan("runner", "10.0.0.0/8", 4789, True, ["192.0.2.1"])

    assert not ping(client, "198.51.100.1"), "without NAT the internet cannot answer 10.1.0.5"
    assert packets(internet, "filter", "INPUT", seen_from_overlay) > 0
    sh(internet, "iptables -Z INPUT")

    ensure_firewall(plan, iptables(runner))
    assert ping(client, "198.51.100.1")
    assert packets(internet, "filter", "INPUT", seen_from_runner) > 0
    assert packets(internet, "filter", "INPUT", seen_from_overlay) == 0
    masquerade = "-s 10.0.0.0/8 ! -d 10.0.0.0/8 -j MASQUERADE"
    assert packets(runner, "nat", "KRNET-POSTROUTING", masquerade) > 0

    assert ping(client, "10.2.0.2")
    assert packets(other, "filter", "INPUT", "-s 10.1.0.5/32 -p icmp -j ACCEPT") > 0


def rx_packets(node: Node, link: str) -> int:
    info = json.loads(node.run(["ip", "-s", "-j", "link", "show", link]).stdout)[0]
    return int(info["stats64"]["rx"]["packets"])


def test_port_guard_passes_registered_peers_and_drops_a_rogue_before_the_tunnel(
    lab: Lab,
) -> None:
    host = lab.add_node("h", "192.0.2.1/24")
    peer = lab.add_node("p", "192.0.2.2/24")
    rogue = lab.add_node("x", "192.0.2.66/24")
    for node in (host, peer):  # no IPv6 chatter on the tunnels: only our packets count
        sh(node, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    vxlan = "type vxlan id 101 dstport 4789 nolearning"
    sh(host, f"ip link add vxkr1 {vxlan} local 192.0.2.1 remote 192.0.2.2")
    sh(host, "ip addr add 10.1.0.254/16 dev vxkr1", "ip link set vxkr1 up")
    sh(peer, f"ip link add vxlan0 {vxlan} local 192.0.2.2 remote 192.0.2.1")
    sh(peer, "ip addr add 10.1.0.1/16 dev vxlan0", "ip link set vxlan0 up")
    host_ipt = iptables(host)
    host_plan = FirewallPlan("host", "10.0.0.0/8", 4789, True, ["192.0.2.2"], ["vxkr1"])
    ensure_firewall(host_plan, host_ipt)
    ensure_firewall(FirewallPlan("runner", "10.0.0.0/8", 4789, True, ["192.0.2.1"]), iptables(peer))

    assert ping(peer, "10.1.0.254")
    assert packets(host, "filter", "KRNET-VXLAN", f"{UDP} {IN_SET} -j ACCEPT") > 0
    assert packets(peer, "filter", "KRNET-VXLAN", f"{UDP} {IN_SET} -j ACCEPT") > 0

    drop = f"{UDP} -j DROP"
    received = rx_packets(host, "vxkr1")
    rogue.run([sys.executable, "-c", ROGUE, "192.0.2.1", "4789", "101", "5"])
    wait_for("5 drops", lambda: packets(host, "filter", "KRNET-VXLAN", drop) >= 5)
    assert rx_packets(host, "vxkr1") == received

    # The rogue "joins": one set member added, the drop count kept, its frames now arrive
    # (which also shows the frames were real VXLAN all along).
    dropped = packets(host, "filter", "KRNET-VXLAN", drop)
    joined = FirewallPlan("host", "10.0.0.0/8", 4789, True, ["192.0.2.2", "192.0.2.66"])
    assert ensure_firewall(joined, host_ipt) == ["ipset krnet-vxlan: added 192.0.2.66"]
    assert packets(host, "filter", "KRNET-VXLAN", drop) == dropped
    rogue.run([sys.executable, "-c", ROGUE, "192.0.2.1", "4789", "101", "5"])
    wait_for("5 frames on vxkr1", lambda: rx_packets(host, "vxkr1") >= received + 5)
    assert packets(host, "filter", "KRNET-VXLAN", drop) == dropped
