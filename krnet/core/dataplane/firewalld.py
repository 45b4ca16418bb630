"""firewalld's trusted zone for the overlay interfaces, as the reference does it.

Runtime only (no --permanent): krnet re-applies it on every pass, so a `firewall-cmd
--reload` or a reboot never leaves a stale permanent binding behind. firewalld filters the
network namespace it runs in (the init one); elsewhere (a lab namespace) it is left alone.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from krnet.core.dataplane.proc import Runner, run_command
from krnet.core.model.plan import RUNNER_TUNNEL, TUNNEL_PREFIX, runner_id_from_tunnel
from krnet.errors import FirewallError

TRUSTED_ZONE = "trusted"
HOST_TUNNEL_WILDCARD = f"{TUNNEL_PREFIX}+"  # firewalld's wildcard for every vxkrN


def krnet_interface(name: str) -> bool:
    """Whether krnet names an interface so (a tunnel); the bridge's name is configured."""
    return name in (HOST_TUNNEL_WILDCARD, RUNNER_TUNNEL) or runner_id_from_tunnel(name) is not None


class Firewalld:
    """`firewall-cmd`, reached through `runner` like the iptables of the same node."""

    def __init__(self, runner: Runner = run_command, binary: str = "firewall-cmd") -> None:
        self.runner = runner
        self.binary = binary

    def running(self) -> bool:
        """firewalld answers `--state` and filters the namespace our commands run in."""
        try:
            state = self._run([self.binary, "--state"])
        except FileNotFoundError:
            return False
        return state.returncode == 0 and self._filters_here()

    def _filters_here(self) -> bool:
        """False only when our commands provably run in another namespace than PID 1's."""
        result = self._run(["readlink", "/proc/self/ns/net", "/proc/1/ns/net"])
        namespaces = result.stdout.split()
        return result.returncode != 0 or len(set(namespaces)) == 1

    def trusted(self) -> tuple[str, ...]:
        """The interfaces in the trusted zone now (runtime configuration)."""
        return tuple(self._call(f"--zone={TRUSTED_ZONE}", "--list-interfaces").stdout.split())

    def ensure_trusted(self, interfaces: Sequence[str]) -> list[str]:
        """Put `interfaces` in the trusted zone and take out tunnels no longer wanted."""
        if not self.running():
            return []
        current = self.trusted()
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
