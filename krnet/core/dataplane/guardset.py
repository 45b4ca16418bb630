"""The VXLAN port guard's allow-list: one ipset `hash:ip` set, matched by one iptables rule.

One rule per peer made every VXLAN packet walk the list (350 us per packet from the last of
4,095 peers, bench/guard.py); a set is one hash lookup whatever its size, and a batch of
joins is one `ipset restore` of the new members. iptables-nft matches it through its
xtables compatibility (`-m set --match-set krnet-vxlan src`). Every change is read back.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address

from krnet.core.dataplane.proc import Runner, run_command, script_file
from krnet.errors import FirewallError

GUARD_SET = "krnet-vxlan"
SET_TYPE = "hash:ip family inet hashsize 1024 maxelem 65536"  # 4,095 runners fit many times


def parse_members(text: str, name: str = GUARD_SET) -> tuple[str, ...]:
    """The addresses in `ipset save NAME` output, in numeric order."""
    found = [line.split()[2] for line in text.splitlines() if line.startswith(f"add {name} ")]
    return tuple(sorted(found, key=lambda address: int(IPv4Address(address.split("/")[0]))))


def restore_script(current: Iterable[str] | None, wanted: Sequence[str]) -> list[str]:
    """The `ipset restore` lines that make the set hold exactly `wanted` (None: no set yet)."""
    have = set(current or ())
    lines = [f"create {GUARD_SET} {SET_TYPE}"] if current is None else []
    lines += [f"del {GUARD_SET} {peer}" for peer in sorted(have - set(wanted))]
    lines += [f"add {GUARD_SET} {peer}" for peer in wanted if peer not in have]
    return lines


class IpSet:
    """The `ipset` command of this node, or wherever `runner` sends it (a lab namespace)."""

    def __init__(self, runner: Runner = run_command, binary: str = "ipset") -> None:
        self.runner = runner
        self.binary = binary

    def members(self) -> tuple[str, ...] | None:
        """The guard set's addresses, or None when there is no set."""
        result = self._run([self.binary, "save", GUARD_SET])
        if result.returncode != 0:
            if "does not exist" in result.stderr:
                return None
            raise self._failed([self.binary, "save", GUARD_SET], result)
        return parse_members(result.stdout)

    def ensure(self, peers: Sequence[str]) -> list[str]:
        """The set holds exactly `peers` (one restore of the difference), read back."""
        current = self.members()
        lines = restore_script(current, peers)
        if not lines:
            return []
        self._restore(lines)
        after = self.members()
        if after != tuple(peers):
            raise FirewallError(
                f"ipset {GUARD_SET} reads back as {len(after or ())} address(es), expected "
                f"{len(peers)}: another program may be managing it; compare `ipset list "
                f"{GUARD_SET}` with `krnet doctor`"
            )
        return [_describe(line) for line in lines]

    def destroy(self) -> list[str]:
        """Remove the set (after the rule that matches it); nothing when there is none."""
        if self.members() is None:
            return []
        argv = [self.binary, "destroy", GUARD_SET]
        result = self._run(argv)
        if result.returncode != 0:
            raise self._failed(argv, result)
        return [f"ipset {GUARD_SET}: deleted"]

    def _restore(self, lines: list[str]) -> None:
        """One `ipset restore` of every line."""
        with script_file(lines, "krnet-ipset-") as path:
            argv = [self.binary, "-exist", "-file", path, "restore"]
            result = self._run(argv)
        if result.returncode != 0:
            raise self._failed(argv, result)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self.runner(argv)
        except FileNotFoundError as exc:
            raise FirewallError(
                "ipset is not installed: install it (apt-get install ipset); the VXLAN port "
                "guard keeps its allow-list in an ipset set"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(f"`{shlex.join(argv)}` hung: check `ipset list` by hand") from exc

    def _failed(self, argv: list[str], result: subprocess.CompletedProcess[str]) -> FirewallError:
        said = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        hint = "load the kernel's ip_set module (modprobe ip_set_hash_ip) and retry"
        if "permission" in said.lower():
            hint = "run krnet as root (it needs CAP_NET_ADMIN)"
        return FirewallError(f"`{shlex.join(argv)}` failed: {said}; {hint}")


def _describe(line: str) -> str:
    verb, name, *rest = line.split()
    if verb == "create":
        return f"ipset {name}: created"
    return f"ipset {name}: {'added' if verb == 'add' else 'removed'} {rest[0]}"
