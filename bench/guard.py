"""The VXLAN port guard at scale: one iptables rule per runner against one ipset set.

In a lab namespace of its own (iptables is the nf_tables backend, `-m set` goes through its
xtables compatibility), for 255 and 4,095 peers, each form is measured for what krnet does
with it: load every peer in one call (`iptables-restore --noflush` / `ipset restore`), read
it back (`iptables-save -c` / `ipset save`), add one peer to a full guard, and what every
VXLAN packet pays: UDP datagrams from the peer matched last, sent over the namespace's
loopback (the kernel's receive path runs in the sender's time), against the same flood with
no guard at all, measured in the same run. Prints the figures and the ratios.

    sudo .venv/bin/python bench/guard.py [--packets 100000] [--sizes 255,4095]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from krnet.core.dataplane.firewall import GUARD_CHAIN  # noqa: E402

PORT = 4789
SET = "krnet-vxlan"
UDP = f"-p udp -m udp --dport {PORT}"
SENDER = "127.0.0.1"  # the peer every flood comes from: matched last by the rules
FLOOD = f"""
import socket, sys, time
n = int(sys.argv[1])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", {PORT}))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.connect(("127.0.0.1", {PORT}))
payload = bytes(64)
start = time.perf_counter_ns()
for _ in range(n):
    tx.send(payload)
print((time.perf_counter_ns() - start) / n)
"""


def peers(count: int) -> list[str]:
    """`count` peer addresses; the flood's sender comes last, so the rules match it last."""
    found = [f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(count - 1)]
    return [*found, SENDER]


class Lab:
    """A namespace of its own, removed on exit."""

    def __init__(self) -> None:
        self.name = f"krtguard{os.getpid()}"

    def __enter__(self) -> Lab:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run(["ip", "link", "set", "lo", "up"])
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def timed(self, argv: Sequence[str], stdin: str | None = None) -> float:
        """Milliseconds one command takes, process start included (as krnet pays it)."""
        start = time.perf_counter()
        self.run(argv, stdin)
        return (time.perf_counter() - start) * 1000

    def flood(self, packets: int) -> float:
        """Nanoseconds per datagram sent to the VXLAN port over loopback."""
        return float(self.run([sys.executable, "-c", FLOOD, str(packets)]))

    def reset(self) -> None:
        self.run(["iptables", "-w", "-F", "INPUT"])
        self.run(["sh", "-c", f"iptables -w -F {GUARD_CHAIN}; iptables -w -X {GUARD_CHAIN}; :"])
        self.run(["sh", "-c", f"ipset destroy {SET} 2>/dev/null; :"])


def rules_form(lab: Lab, members: list[str], packets: int) -> dict[str, float]:
    """One `-s PEER/32` ACCEPT rule per peer, then DROP."""
    lines = [f"-A {GUARD_CHAIN} -s {peer}/32 {UDP} -j ACCEPT" for peer in members]
    restore = "\n".join(
        [
            "*filter",
            f":{GUARD_CHAIN} - [0:0]",
            *lines,
            f"-A {GUARD_CHAIN} {UDP} -j DROP",
            "COMMIT",
            "",
        ]
    )
    figures = {"load": lab.timed(["iptables-restore", "-w", "--noflush"], restore)}
    lab.run(["iptables", "-w", "-A", "INPUT", *UDP.split(), "-j", GUARD_CHAIN])
    figures["read"] = lab.timed(["iptables-save", "-c"])
    one = f"*filter\n-I {GUARD_CHAIN} 1 -s 192.0.2.99/32 {UDP} -j ACCEPT\nCOMMIT\n"
    figures["add one"] = lab.timed(["iptables-restore", "-w", "--noflush"], one)
    figures["per packet"] = lab.flood(packets)
    return figures


def set_form(lab: Lab, members: list[str], packets: int) -> dict[str, float]:
    """One hash:ip set of peers and one `-m set --match-set` ACCEPT rule, then DROP."""
    restore = "\n".join(
        [f"create {SET} hash:ip family inet hashsize 1024 maxelem 65536"]
        + [f"add {SET} {peer}" for peer in members]
        + [""]
    )
    figures = {"load": lab.timed(["ipset", "restore"], restore)}
    rules = (
        f"*filter\n:{GUARD_CHAIN} - [0:0]\n-A {GUARD_CHAIN} {UDP} -m set --match-set {SET} src "
        f"-j ACCEPT\n-A {GUARD_CHAIN} {UDP} -j DROP\n-A INPUT {UDP} -j {GUARD_CHAIN}\nCOMMIT\n"
    )
    figures["load"] += lab.timed(["iptables-restore", "-w", "--noflush"], rules)
    figures["read"] = lab.timed(["ipset", "save", SET]) + lab.timed(["iptables-save", "-c"])
    figures["add one"] = lab.timed(["ipset", "add", "-exist", SET, "192.0.2.99"])
    figures["per packet"] = lab.flood(packets)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both forms for each size, the unguarded flood beside them, and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--sizes", default="255,4095")
    parser.add_argument("--runs", type=int, default=3, help="median of this many floods")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/guard.py needs root (namespaces, iptables, ipset)", file=sys.stderr)
        return 2
    with Lab() as lab:
        for size in (int(part) for part in args.sizes.split(",")):
            members = peers(size)
            runs: dict[str, list[dict[str, float]]] = {"none": [], "rules": [], "set": []}
            for _ in range(args.runs):  # interleaved: background load hits every form alike
                lab.reset()
                runs["none"].append({"per packet": lab.flood(args.packets)})
                lab.reset()
                runs["rules"].append(rules_form(lab, members, args.packets))
                lab.reset()
                runs["set"].append(set_form(lab, members, args.packets))
            report(size, {form: median(done) for form, done in runs.items()})
    return 0


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(size: int, figures: dict[str, dict[str, float]]) -> None:
    """One block per size: each figure for both forms and rules/set."""
    rules, guarded, bare = figures["rules"], figures["set"], figures["none"]["per packet"]
    print(f"{size} peers  (unguarded flood: {bare:.0f} ns per datagram)")
    for key, unit in (("load", "ms"), ("read", "ms"), ("add one", "ms"), ("per packet", "ns")):
        line = f"  {key:<11} rules {rules[key]:8.1f} {unit}   set {guarded[key]:8.1f} {unit}"
        line += f"   rules/set {rules[key] / guarded[key]:5.2f}"
        if key == "per packet":
            extra = rules[key] - bare, guarded[key] - bare
            line += f"   guard cost: rules +{extra[0]:.0f} ns, set +{extra[1]:.0f} ns"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
