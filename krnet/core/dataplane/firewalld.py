"""firewalld's trusted zone for the overlay interfaces, as the reference does it, and the
VXLAN port in the underlay's zone.

Runtime only (no --permanent): krnet re-applies it on every pass, so a `firewall-cmd
--reload` or a reboot never leaves a stale permanent binding behind. firewalld filters the
network namespace it runs in; krnet touches it only when that is the namespace krnet runs in.

firewalld's zone on the underlay link rejects UDP 4789 unless told otherwise, whatever
iptables accepts (each nftables table votes on its own). So krnet accepts the VXLAN port there
from the members only (one rich rule per peer address, the guard's allowlist), or from anyone
when `vxlan_port_guard` is off (`--add-port`), in the zone of the link that reaches each peer.
What the permanent configuration already holds is the operator's and is never removed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from krnet.core.dataplane.proc import Runner, run_command, script_file
from krnet.core.model.plan import RUNNER_TUNNEL, TUNNEL_PREFIX, runner_id_from_tunnel
from krnet.errors import FirewallError

TRUSTED_ZONE = "trusted"
HOST_TUNNEL_WILDCARD = f"{TUNNEL_PREFIX}+"  # firewalld's wildcard for every vxkrN
FIREWALLD_BUS_NAME = "org.fedoraproject.FirewallD1"
VXLAN_RULE = re.compile(
    r'rule family="ipv4" source address="(?P<peer>[0-9.]+)(?:/32)?" '
    r'port port="(?P<port>[0-9]+)" protocol="udp" accept'
)


def vxlan_rule(peer: str, port: int) -> str:
    """The rich rule that accepts VXLAN from one member, as firewalld lists it."""
    return f'rule family="ipv4" source address="{peer}" port port="{port}" protocol="udp" accept'


@dataclass(frozen=True)
class Zone:
    """One zone as `firewall-cmd --list-all` prints it (the parts krnet reads)."""

    name: str
    interfaces: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    rich_rules: tuple[str, ...] = ()
    default: bool = False  # the zone of every link bound to none

    def vxlan_openings(self, port: int | None = None) -> tuple[str, ...]:
        """The openings of this zone krnet would make: "4789/udp" or a VXLAN rich rule."""
        openings = [p for p in self.ports if p.endswith("/udp")]
        openings += [r for r in self.rich_rules if VXLAN_RULE.fullmatch(r)]
        return tuple(o for o in openings if port is None or _opening_port(o) == port)


def _opening_port(opening: str) -> int:
    match = VXLAN_RULE.fullmatch(opening)
    return int(match["port"] if match else opening.partition("/")[0])


def parse_zones(text: str) -> dict[str, Zone]:
    """`--list-all` or `--list-all-zones` output, by zone name."""
    zones: dict[str, Zone] = {}
    name, fields, key, default = "", dict[str, list[str]](), "", False
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if name:
                zones[name] = Zone(
                    name,
                    tuple(fields.get("interfaces", [])),
                    tuple(fields.get("ports", [])),
                    tuple(fields.get("rich rules", [])),
                    default,
                )
            name, fields, key, default = "", {}, "", False
        elif not line[0].isspace():  # "public (default, active)"
            name, _, attributes = line.partition(" ")
            default = "default" in attributes
        elif key == "rich rules" and line.startswith("\t"):
            fields[key].append(line.strip())
        else:
            key, _, value = line.strip().partition(":")
            fields[key] = value.split() if key != "rich rules" else []
    return zones


def krnet_interface(name: str) -> bool:
    """Whether krnet names an interface so (a tunnel); the bridge's name is configured."""
    return name in (HOST_TUNNEL_WILDCARD, RUNNER_TUNNEL) or runner_id_from_tunnel(name) is not None


SYSTEM_BUS = Path("/run/dbus/system_bus_socket")


def _system_bus_here() -> bool:
    """firewall-cmd talks D-Bus: with no system bus, firewalld cannot be running here, and
    firewall-cmd (a Python program, about 0.4 s a call) is not started on every join for it."""
    return bool(os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")) or SYSTEM_BUS.exists()


class Firewalld:
    """`firewall-cmd`, reached through `runner` like the iptables of the same node."""

    def __init__(self, runner: Runner = run_command, binary: str = "firewall-cmd") -> None:
        self.runner = runner
        self.binary = binary

    def running(self) -> bool:
        """firewalld answers `--state` and filters the namespace our commands run in."""
        if self.runner is run_command and not _system_bus_here():
            return False
        try:
            state = self._run([self.binary, "--state"])
        except FileNotFoundError:
            return False
        return state.returncode == 0 and self._filters_here()

    def _filters_here(self) -> bool:
        """False only when our commands provably run in another namespace than firewalld's.

        firewalld's own process is asked of the bus it answers on; without `dbus-send`, PID 1
        stands in for it (firewalld as a system service runs in PID 1's namespace).
        """
        result = self._run(["readlink", "/proc/self/ns/net", f"/proc/{self._pid()}/ns/net"])
        namespaces = result.stdout.split()
        return result.returncode != 0 or len(set(namespaces)) == 1

    def _pid(self) -> int:
        argv = ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus"]
        argv += ["/org/freedesktop/DBus", "org.freedesktop.DBus.GetConnectionUnixProcessID"]
        try:
            answer = self._run([*argv, f"string:{FIREWALLD_BUS_NAME}"])
        except FileNotFoundError:
            return 1
        words = answer.stdout.split()
        return int(words[-1]) if answer.returncode == 0 and words and words[-1].isdigit() else 1

    def trusted(self) -> tuple[str, ...]:
        """The interfaces in the trusted zone now (runtime configuration)."""
        return tuple(self._call(f"--zone={TRUSTED_ZONE}", "--list-interfaces").stdout.split())

    def ensure_trusted(self, interfaces: Sequence[str]) -> list[str]:
        """Put `interfaces` in the trusted zone and take out tunnels no longer wanted."""
        if not self.running():
            return []
        return self._converge_trusted(self.trusted(), interfaces)

    def ensure_overlay(
        self, interfaces: Sequence[str], port: int, peers: Sequence[str], anyone: bool
    ) -> list[str]:
        """`ensure_vxlan_port` then `ensure_trusted`, from one look at firewalld (slow to ask)."""
        if not self.running():
            return []
        zones = self._zones()
        trusted = zones.get(TRUSTED_ZONE, Zone(TRUSTED_ZONE)).interfaces
        return self._converge_vxlan(zones, port, peers, anyone) + self._converge_trusted(
            trusted, interfaces
        )

    def _converge_trusted(self, current: Sequence[str], interfaces: Sequence[str]) -> list[str]:
        changes = []
        for name in interfaces:
            if name not in current:
                # --change-interface also moves it out of a zone NetworkManager put it in
                self._call(f"--zone={TRUSTED_ZONE}", f"--change-interface={name}")
                changes.append(f"firewalld: {name} added to the {TRUSTED_ZONE} zone (runtime)")
        stale = [n for n in current if runner_id_from_tunnel(n) is not None and n not in interfaces]
        return changes + self._remove(stale)

    def remove_trusted(self, interfaces: Sequence[str] = ()) -> list[str]:
        """Take krnet's interfaces (tunnels, and `interfaces`) out of the trusted zone."""
        if not self.running():
            return []
        return self._remove([n for n in self.trusted() if krnet_interface(n) or n in interfaces])

    def ensure_vxlan_port(self, port: int, peers: Sequence[str], anyone: bool) -> list[str]:
        """Accept UDP `port` in the zone that reaches each peer: from the peers, or `anyone`;
        take out openings of that port krnet no longer wants, in any zone."""
        if not self.running():
            return []
        return self._converge_vxlan(self._zones(), port, peers, anyone)

    def remove_vxlan_port(self, port: int) -> list[str]:
        """Take out every VXLAN opening krnet makes for `port`, in every zone."""
        if not self.running():
            return []
        changes: list[str] = []
        for zone in self._zones().values():
            changes += self._close(zone.name, zone.vxlan_openings(port))
        return changes

    def _converge_vxlan(
        self, zones: dict[str, Zone], port: int, peers: Sequence[str], anyone: bool
    ) -> list[str]:
        wanted: dict[str, set[str]] = defaultdict(set)
        devices = self._devices_towards(peers)
        for peer in peers:
            opening = f"{port}/udp" if anyone else vxlan_rule(peer, port)
            wanted[self._zone_of(devices.get(peer), zones)].add(opening)
        if anyone and not peers:
            wanted[self._default_zone(zones)].add(f"{port}/udp")
        changes: list[str] = []
        for name in sorted(set(wanted) | set(zones)):
            have = zones.get(name, Zone(name)).vxlan_openings(port)
            missing = sorted(wanted[name] - set(have))
            if missing:
                self._call(f"--zone={name}", *(_option("add", opening) for opening in missing))
            changes += [
                f"firewalld: {_describe(opening)} accepted in the {name} zone (runtime)"
                for opening in missing
            ]
            changes += self._close(name, [o for o in have if o not in wanted[name]])
        return changes

    def _close(self, zone_name: str, openings: Iterable[str]) -> list[str]:
        """Remove runtime openings, except those the permanent configuration holds."""
        openings = list(openings)
        if not openings:
            return []
        permanent = self._call("--permanent", f"--zone={zone_name}", "--list-all").stdout
        kept = parse_zones(permanent).get(zone_name, Zone(zone_name)).vxlan_openings()
        closing = [opening for opening in openings if opening not in kept]
        if closing:
            self._call(f"--zone={zone_name}", *(_option("remove", o) for o in closing))
        return [
            f"firewalld: {_describe(opening)} no longer accepted in the {zone_name} zone"
            for opening in closing
        ]

    def _zones(self) -> dict[str, Zone]:
        return parse_zones(self._call("--list-all-zones").stdout)

    def _default_zone(self, zones: dict[str, Zone]) -> str:
        marked = [zone.name for zone in zones.values() if zone.default]
        return marked[0] if marked else self._call("--get-default-zone").stdout.strip()

    def _devices_towards(self, peers: Sequence[str]) -> dict[str, str]:
        """The link our route to each peer leaves by, from one `ip -batch` of `route get`s
        (one `ip` a peer cost seconds at thousands of runners)."""
        if not peers:
            return {}
        with script_file([f"route get {peer}" for peer in peers], "krnet-routes-") as path:
            output = self._run(["ip", "-o", "-force", "-batch", path]).stdout
        devices = {}
        for line in output.splitlines():
            words = line.split()
            if words and "dev" in words[:-1]:
                devices[words[0]] = words[words.index("dev") + 1]
        return devices

    def _zone_of(self, device: str | None, zones: dict[str, Zone]) -> str:
        """The zone `device` is bound to, or the default one when it is unbound (or unknown)."""
        bound = [zone.name for zone in zones.values() if device in zone.interfaces]
        return bound[0] if bound else self._default_zone(zones)

    def _remove(self, names: Sequence[str]) -> list[str]:
        for name in names:
            self._call(f"--zone={TRUSTED_ZONE}", f"--remove-interface={name}")
        return [f"firewalld: {name} removed from the {TRUSTED_ZONE} zone" for name in names]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return self.runner(argv)
        except subprocess.TimeoutExpired as exc:
            raise FirewallError(
                f"`{shlex.join(argv)}` hung: check `systemctl status firewalld dbus`"
            ) from exc

    def _call(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args]
        result = self._run(argv)
        if result.returncode != 0:
            said = " ".join((result.stderr or result.stdout).split())
            raise FirewallError(
                f"`{shlex.join(argv)}` failed: {said or result.returncode}; "
                "check `firewall-cmd --get-active-zones` and firewalld's log"
            )
        return result


def _option(verb: str, opening: str) -> str:
    """`--add-port=4789/udp`, `--remove-rich-rule=...`: the option for one opening."""
    kind = "rich-rule" if VXLAN_RULE.fullmatch(opening) else "port"
    return f"--{verb}-{kind}={opening}"


def _describe(opening: str) -> str:
    match = VXLAN_RULE.fullmatch(opening)
    if match is None:
        return f"UDP {_opening_port(opening)} (VXLAN) from anyone"
    return f"UDP {match['port']} (VXLAN) from {match['peer']}"
