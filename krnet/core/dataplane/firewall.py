"""krnet's iptables rules: pure generation and convergence, then a thin `iptables` layer.

Every rule lives in a krnet-owned chain with one jump from a built-in chain, in the tables
Docker uses (an ACCEPT in a separate nftables table cannot override Docker's FORWARD DROP):

  filter KRNET-FORWARD      <- FORWARD      accept -s / -d the overlay (host and runner)
  filter KRNET-VXLAN        <- INPUT        VXLAN port: ACCEPT the guard set's members then
                                            DROP (guard on), or ACCEPT (guard off)
  filter KRNET-OUTPUT       <- OUTPUT       VXLAN port: ACCEPT
  nat    KRNET-POSTROUTING  <- POSTROUTING  MASQUERADE -s overlay ! -d overlay (runner)

The guard's allow-list is the ipset set `krnet-vxlan` (krnet.core.dataplane.guardset): one
rule matches every peer with one lookup. Rules are written the way `iptables-save` prints
them, so what was read back compares as plain strings. Docker re-inserts its own jumps at
the top of FORWARD; each pass puts krnet's jumps back at position 1, so no foreign verdict
comes before krnet's accepts.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from krnet.core.dataplane.firewalld import Firewalld
from krnet.core.dataplane.guardset import GUARD_SET, IpSet
from krnet.core.dataplane.proc import Runner, run_command
from krnet.core.model.node_state import RuleInfo
from krnet.errors import FirewallError

FORWARD_CHAIN = "KRNET-FORWARD"
GUARD_CHAIN = "KRNET-VXLAN"
OUTPUT_CHAIN = "KRNET-OUTPUT"
NAT_CHAIN = "KRNET-POSTROUTING"
# krnet's chain -> (table, the built-in chain that jumps to it)
OWNED_CHAINS: Mapping[str, tuple[str, str]] = {
    FORWARD_CHAIN: ("filter", "FORWARD"),
    GUARD_CHAIN: ("filter", "INPUT"),
    OUTPUT_CHAIN: ("filter", "OUTPUT"),
    NAT_CHAIN: ("nat", "POSTROUTING"),
}
MODES = ("host", "runner")
LOCK_WAIT_SECONDS = 10  # iptables -w: wait this long for Docker (or anyone) to drop the lock

# table -> chain -> rules in order; chains without rules are present with an empty tuple
Ruleset = Mapping[str, Mapping[str, tuple[RuleInfo, ...]]]


@dataclass(frozen=True)
class FirewallPlan:
    """What the firewall of one node should hold; normalized and validated on construction."""

    mode: str  # "host" | "runner"
    overlay_cidr: str  # "10.0.0.0/8"
    vxlan_port: int
    guard_enabled: bool
    guard_peers: Sequence[str] = ()  # host: registered runner addresses; runner: the host
    interfaces: Sequence[str] = ()  # for firewalld's trusted zone

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FirewallError(f"firewall mode {self.mode!r} must be 'host' or 'runner'")
        try:
            network = IPv4Network(self.overlay_cidr, strict=False)
        except ValueError as exc:
            raise FirewallError(f"overlay network {self.overlay_cidr!r} is not IPv4") from exc
        if not 1 <= self.vxlan_port <= 65535:
            raise FirewallError(f"overlay_vxlan_port {self.vxlan_port} is outside 1..65535")
        object.__setattr__(self, "overlay_cidr", str(network))
        object.__setattr__(self, "guard_peers", _peers(self.guard_peers))
        object.__setattr__(self, "interfaces", tuple(dict.fromkeys(self.interfaces)))


def _peers(peers: Iterable[str]) -> tuple[str, ...]:
    """Unique peer addresses in numeric order, so the allowlist does not churn."""
    parsed: set[IPv4Address] = set()
    for peer in peers:
        try:
            parsed.add(IPv4Address(peer))
        except ValueError as exc:
            raise FirewallError(f"VXLAN guard peer {peer!r} is not an IPv4 address") from exc
    return tuple(str(peer) for peer in sorted(parsed))


@dataclass(frozen=True)
class Chain:
    """One krnet chain as it should be: its rules and the jump into it."""

    table: str
    name: str
    parent: str
    jump: str
    rules: tuple[str, ...]


def planned_chains(plan: FirewallPlan) -> tuple[Chain, ...]:
    """The chains, rules and jumps `plan` asks for, in iptables-save's notation."""
    cidr, udp = plan.overlay_cidr, f"-p udp -m udp --dport {plan.vxlan_port}"
    vxlan: tuple[str, ...]
    if plan.guard_enabled:
        vxlan = (f"{udp} -m set --match-set {GUARD_SET} src -j ACCEPT", f"{udp} -j DROP")
    else:
        vxlan = (f"{udp} -j ACCEPT",)
    chains = [
        _chain(FORWARD_CHAIN, "-j", (f"-s {cidr} -j ACCEPT", f"-d {cidr} -j ACCEPT")),
        _chain(GUARD_CHAIN, f"{udp} -j", vxlan),
        _chain(OUTPUT_CHAIN, f"{udp} -j", (f"{udp} -j ACCEPT",)),
    ]
    if plan.mode == "runner":
        chains.append(_chain(NAT_CHAIN, "-j", (f"-s {cidr} ! -d {cidr} -j MASQUERADE",)))
    return tuple(chains)


def _chain(name: str, jump_match: str, rules: tuple[str, ...]) -> Chain:
    table, parent = OWNED_CHAINS[name]
    return Chain(table, name, parent, f"{jump_match} {name}", rules)


def expected_rules(plan: FirewallPlan) -> tuple[RuleInfo, ...]:
    """Every rule and jump `plan` asks for (zero counters), to compare with `read_rules`."""
    expected: list[RuleInfo] = []
    for chain in planned_chains(plan):
        expected.append(RuleInfo(chain.table, chain.parent, chain.jump))
        expected += [RuleInfo(chain.table, chain.name, spec) for spec in chain.rules]
    return tuple(expected)


def missing_rules(plan: FirewallPlan, rules: Iterable[RuleInfo]) -> tuple[RuleInfo, ...]:
    """The rules and jumps `plan` asks for that `rules` (as read back) lack."""
    present = {(rule.table, rule.chain, rule.spec) for rule in rules}
    return tuple(
        rule for rule in expected_rules(plan) if (rule.table, rule.chain, rule.spec) not in present
    )


def parse_save(text: str) -> dict[str, dict[str, tuple[RuleInfo, ...]]]:
    """Parse `iptables-save -c` output into table -> chain -> rules with counters."""
    ruleset: dict[str, dict[str, list[RuleInfo]]] = {}
    table: dict[str, list[RuleInfo]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("*"):
            name = line[1:].strip()
            table = ruleset.setdefault(name, {})
        elif line.startswith(":"):
            table.setdefault(line[1:].split()[0], [])
        elif line.startswith(("[", "-A ")):
            packets, byte_count = 0, 0
            if line.startswith("["):
                counters, _, line = line.partition("] ")
                packets, byte_count = (int(part) for part in counters[1:].split(":"))
            chain, _, spec = line.removeprefix("-A ").partition(" ")
            table.setdefault(chain, []).append(RuleInfo(name, chain, spec, packets, byte_count))
    return {name: {c: tuple(r) for c, r in chains.items()} for name, chains in ruleset.items()}


def target(spec: str) -> str | None:
    """The chain or verdict a rule jumps to (`-j X`), or None."""
    words = spec.split()
    return words[words.index("-j") + 1] if "-j" in words[:-1] else None


def krnet_rules(ruleset: Ruleset) -> tuple[RuleInfo, ...]:
    """The rules in krnet's chains and the jumps into them, in iptables-save order."""
    return tuple(
        rule
        for chains in ruleset.values()
        for chain, rules in chains.items()
        for rule in rules
        if chain in OWNED_CHAINS or target(rule.spec) in OWNED_CHAINS
    )


def guard_drops(rules: Iterable[RuleInfo]) -> int:
    """Packets the VXLAN port guard dropped since its rules were (re)written."""
    return sum(
        rule.packets for rule in rules if rule.chain == GUARD_CHAIN and target(rule.spec) == "DROP"
    )


@dataclass(frozen=True)
class Step:
    """One iptables invocation (after `iptables -w N`) and the change it makes, if worth saying."""

    table: str
    args: tuple[str, ...]
    change: str | None = None

    @property
    def argv(self) -> list[str]:
        return ["-t", self.table, *self.args]


def converge_steps(plan: FirewallPlan, ruleset: Ruleset) -> list[Step]:
    """The iptables calls that turn `ruleset` into what `plan` asks for; none when converged."""
    steps: list[Step] = []
    wanted = planned_chains(plan)
    for chain in wanted:
        chains = ruleset.get(chain.table, {})
        if chain.name not in chains:
            steps.append(
                Step(chain.table, ("-N", chain.name), f"{chain.table}: created {chain.name}")
            )
        current = [rule.spec for rule in chains.get(chain.name, ())]
        steps += _chain_edits(chain, current)
        steps += _jump_steps(chain, chains.get(chain.parent, ()))
    names = {chain.name for chain in wanted}
    steps += _removal_steps(ruleset, [name for name in OWNED_CHAINS if name not in names])
    return steps


def _chain_edits(chain: Chain, current: list[str]) -> list[Step]:
    """Delete unwanted rules and insert missing ones in place, so other counters survive."""
    wanted = list(chain.rules)
    if current == wanted:
        return []
    where = f"{chain.table} {chain.name}"
    if not current:
        return [
            Step(chain.table, ("-A", chain.name, *shlex.split(spec)), f"{where}: added {spec}")
            for spec in wanted
        ]
    kept = [spec for spec in current if spec in wanted]
    if len(set(kept)) != len(kept) or kept != [spec for spec in wanted if spec in kept]:
        return [
            Step(chain.table, ("-F", chain.name), f"{where}: rewritten ({len(wanted)} rules)"),
            *(Step(chain.table, ("-A", chain.name, *shlex.split(spec))) for spec in wanted),
        ]
    steps = [
        Step(chain.table, ("-D", chain.name, *shlex.split(spec)), f"{where}: removed {spec}")
        for spec in current
        if spec not in wanted
    ]
    for position, spec in enumerate(wanted, start=1):
        if spec not in kept:
            args = ("-I", chain.name, str(position), *shlex.split(spec))
            steps.append(Step(chain.table, args, f"{where}: added {spec}"))
    return steps


def _jump_steps(chain: Chain, parent_rules: Sequence[RuleInfo]) -> list[Step]:
    """Keep exactly one jump into `chain`, at position 1 of its built-in chain."""
    specs = [rule.spec for rule in parent_rules]
    ours = [spec for spec in specs if target(spec) == chain.name]
    if ours == [chain.jump] and specs[0] == chain.jump:
        return []
    where = f"{chain.table} {chain.parent}"
    if not ours:
        change = f"{where}: inserted jump {chain.jump!r} at position 1"
    elif chain.jump not in ours:
        change = f"{where}: replaced jump {ours[0]!r} with {chain.jump!r} at position 1"
    else:
        change = f"{where}: moved jump {chain.jump!r} back to position 1 (first was {specs[0]!r})"
    return [
        *(Step(chain.table, ("-D", chain.parent, *shlex.split(spec))) for spec in ours),
        Step(chain.table, ("-I", chain.parent, "1", *shlex.split(chain.jump)), change),
    ]


def _removal_steps(ruleset: Ruleset, names: Iterable[str]) -> list[Step]:
    """Delete every jump into the named krnet chains, then the chains themselves."""
    steps: list[Step] = []
    present = [name for name in names if name in ruleset.get(OWNED_CHAINS[name][0], {})]
    for name in present:
        table = OWNED_CHAINS[name][0]
        for chain, rules in ruleset[table].items():
            steps += [
                Step(
                    table, ("-D", chain, *shlex.split(r.spec)), f"{table} {chain}: removed {r.spec}"
                )
                for r in rules
                if target(r.spec) == name and chain not in OWNED_CHAINS
            ]
    for name in present:
        table = OWNED_CHAINS[name][0]
        steps += [Step(table, ("-F", name)), Step(table, ("-X", name), f"{table}: deleted {name}")]
    return steps


def removal_steps(ruleset: Ruleset) -> list[Step]:
    """The iptables calls that remove all of krnet's jumps and chains, and nothing else."""
    return _removal_steps(ruleset, OWNED_CHAINS)


class Iptables:
    """The `iptables` command of this node, or wherever `runner` sends it."""

    def __init__(self, runner: Runner = run_command, binary: str = "iptables") -> None:
        self.runner = runner
        self.binary = binary

    def apply(self, step: Step) -> None:
        self._call([self.binary, "-w", str(LOCK_WAIT_SECONDS), *step.argv])

    def save(self) -> str:
        """All tables with counters, as `iptables-save -c` prints them."""
        return self._call([f"{self.binary}-save", "-c"]).stdout

    def _call(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        command = shlex.join(argv)
        try:
            result = self.runner(argv)
        except FileNotFoundError as exc:
            raise FirewallError(
                f"{argv[0]} is not installed: install iptables (apt-get install iptables), "
                "the same tool Docker uses"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(f"`{command}` hung: check `iptables -L` by hand") from exc
        if result.returncode != 0:
            said = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
            raise FirewallError(f"`{command}` failed: {said}; {_fix(said)}")
        return result


def _fix(said: str) -> str:
    """What a person can do about an iptables failure."""
    lowered = said.lower()
    if "permission denied" in lowered or "must be root" in lowered:
        return "run krnet as root (it needs CAP_NET_ADMIN)"
    if "xtables lock" in lowered:
        return "another program holds the xtables lock; krnet retries on its next pass"
    if "table does not exist" in lowered or "can't initialize" in lowered:
        return "load the kernel's netfilter modules (modprobe ip_tables iptable_nat) and retry"
    return "compare with `iptables-save` and `krnet doctor`; the next pass retries"


def read_ruleset(ipt: Iptables) -> dict[str, dict[str, tuple[RuleInfo, ...]]]:
    """Every table as it is now, with counters."""
    return parse_save(ipt.save())


def read_rules(ipt: Iptables) -> tuple[RuleInfo, ...]:
    """krnet's rules and the jumps into them, with their packet and byte counters."""
    return krnet_rules(read_ruleset(ipt))


def read_allowlist(ipt: Iptables) -> tuple[str, ...]:
    """The addresses the VXLAN port guard lets in (its set's members), as read back."""
    return IpSet(ipt.runner).members() or ()


def ensure_firewall(
    plan: FirewallPlan, ipt: Iptables, firewalld: Firewalld | None = None
) -> list[str]:
    """Converge iptables (and firewalld when it runs: trusted zone, VXLAN port) on `plan`; say
    what changed.

    firewalld is reached through the same runner as `ipt` unless one is given. The guard's
    set is filled before the rule that matches it, and deleted once no rule does.
    """
    guard = IpSet(ipt.runner)
    changes = guard.ensure(plan.guard_peers) if plan.guard_enabled else []
    changes += _apply(ipt, converge_steps(plan, read_ruleset(ipt)))
    if not plan.guard_enabled:
        changes += guard.destroy()
    fw = firewalld if firewalld is not None else Firewalld(ipt.runner)
    anyone = not plan.guard_enabled
    return changes + fw.ensure_overlay(plan.interfaces, plan.vxlan_port, plan.guard_peers, anyone)


def remove_firewall(
    ipt: Iptables,
    firewalld: Firewalld | None = None,
    interfaces: Sequence[str] = (),
    vxlan_port: int | None = None,
) -> list[str]:
    """Remove krnet's chains, the jumps into them, its trusted interfaces and (given the port)
    its VXLAN openings in firewalld; idempotent."""
    changes = _apply(ipt, removal_steps(read_ruleset(ipt))) + IpSet(ipt.runner).destroy()
    fw = firewalld if firewalld is not None else Firewalld(ipt.runner)
    vxlan = fw.remove_vxlan_port(vxlan_port) if vxlan_port is not None else []
    return changes + vxlan + fw.remove_trusted(interfaces)


class NodeFirewall:
    """The `Firewall` handle the planes are given: this node's iptables and firewalld."""

    def __init__(self, ipt: Iptables | None = None) -> None:
        self.ipt = ipt if ipt is not None else Iptables()

    def ensure(self, plan: FirewallPlan) -> list[str]:
        return ensure_firewall(plan, self.ipt)

    def remove(self, interfaces: Sequence[str], vxlan_port: int) -> list[str]:
        """Remove every rule krnet made here (a runner that lost its allocation)."""
        return remove_firewall(self.ipt, interfaces=interfaces, vxlan_port=vxlan_port)


def _apply(ipt: Iptables, steps: Iterable[Step]) -> list[str]:
    changes = []
    for step in steps:
        ipt.apply(step)
        if step.change:
            changes.append(step.change)
    return changes
