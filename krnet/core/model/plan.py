"""The overlay address plan: pure arithmetic from the host's overlay address and prefixes.

The reference hard-codes runner N's subnet as 10.N.0.0/16. krnet derives it instead: the
overlay network (OVERLAY_HOST_IP/OVERLAY_HOST_PREFIX) is cut into blocks of
`overlay_runner_prefix`; block 0 is the host's, runner i owns block i, its gateway is
block + 1 and the host's address on it is block + 254. With the defaults this is exactly
the reference's table; the reference's custom scheme (172.16.0.1/12) works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

# The largest cluster krnet builds: /20 blocks inside a /8 (4,095 = 2**12 - 1 runners). Every
# piece is sized and measured for it: VNIs base + 4,095 fit 24 bits, `vxkr4095` is 8 of the
# 15 bytes IFNAMSIZ allows, the guard is one set, doctor's checks are linear. Narrower blocks
# (up to /24) are cut, but only the first 4,095 are handed out.
MAX_RUNNERS = 4095
MAX_VNI = 2**24 - 1
IFNAME_MAX = 15
HOST_DEVICE = "kohaku-host"
RUNNER_TUNNEL = "vxlan0"
TUNNEL_PREFIX = "vxkr"
VXLAN_OVERHEAD = 50
GATEWAY_OFFSET = 1
HOST_ON_SUBNET_OFFSET = 254
MIN_RUNNER_BLOCK_PREFIX = 24  # block + 254 must stay inside the block


class PlanError(ValueError):
    """The prefixes or VNI base leave no room for a working plan."""


def tunnel_name(runner_id: int) -> str:
    """The host-side tunnel of a runner: `vxkr1`, ..., `vxkr4095` (decimal)."""
    return f"{TUNNEL_PREFIX}{runner_id}"


def runner_id_from_tunnel(name: str) -> int | None:
    """Inverse of `tunnel_name`, or None for a link krnet did not name."""
    suffix = name.removeprefix(TUNNEL_PREFIX)
    if suffix == name or not suffix.isdigit() or suffix != str(int(suffix)):
        return None
    runner_id = int(suffix)
    return runner_id if 1 <= runner_id <= MAX_RUNNERS else None


@dataclass(frozen=True)
class RunnerAddresses:
    """Everything a runner id implies on both ends of its tunnel."""

    runner_id: int
    vni: int
    subnet: IPv4Network
    gateway: IPv4Address
    host_ip_on_subnet: IPv4Address
    host_interface: str

    @property
    def first_container(self) -> IPv4Address:
        return self.gateway + 1

    @property
    def last_container(self) -> IPv4Address:
        return self.subnet.broadcast_address - 1

    @property
    def gateway_interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")

    @property
    def host_interface_address(self) -> IPv4Interface:
        return IPv4Interface((int(self.host_ip_on_subnet), self.subnet.prefixlen))


@dataclass(frozen=True)
class OverlayPlan:
    """The address plan of one cluster; validated on construction."""

    host_ip: IPv4Address
    host_prefix: int
    runner_prefix: int
    vxlan_id_base: int

    @classmethod
    def build(
        cls, host_ip: str, host_prefix: int, runner_prefix: int, vxlan_id_base: int
    ) -> OverlayPlan:
        try:
            address = IPv4Address(host_ip)
        except ValueError as exc:
            raise PlanError(f"overlay_host_ip {host_ip!r} is not an IPv4 address") from exc
        plan = cls(address, host_prefix, runner_prefix, vxlan_id_base)
        plan.validate()
        return plan

    def validate(self) -> None:
        if not 1 <= self.host_prefix <= 30:
            raise PlanError(f"overlay_host_prefix {self.host_prefix} must be between 1 and 30")
        if not self.host_prefix < self.runner_prefix <= MIN_RUNNER_BLOCK_PREFIX:
            raise PlanError(
                f"overlay_runner_prefix {self.runner_prefix} must be longer than "
                f"overlay_host_prefix {self.host_prefix} and at most /{MIN_RUNNER_BLOCK_PREFIX} "
                "(each runner block needs its gateway at +1 and the host at +254)"
            )
        if self.host_ip not in self.host_block:
            raise PlanError(
                f"overlay_host_ip {self.host_ip} is not in block 0 ({self.host_block}) of "
                f"{self.network}: runner blocks would overlap the host's address"
            )
        if self.vxlan_id_base < 0 or self.vxlan_id_base + self.max_runners > MAX_VNI:
            raise PlanError(
                f"overlay_vxlan_id {self.vxlan_id_base} + {self.max_runners} runners exceeds the "
                f"24-bit VNI space ({MAX_VNI}): lower overlay_vxlan_id"
            )

    @cached_property
    def network(self) -> IPv4Network:
        return IPv4Network(f"{self.host_ip}/{self.host_prefix}", strict=False)

    @property
    def host_interface(self) -> IPv4Interface:
        """The host's own overlay address, e.g. 10.0.0.1/8 on `kohaku-host`."""
        return IPv4Interface(f"{self.host_ip}/{self.host_prefix}")

    @property
    def block_size(self) -> int:
        return 1 << (32 - self.runner_prefix)

    @cached_property
    def host_block(self) -> IPv4Network:
        return IPv4Network(f"{self.network.network_address}/{self.runner_prefix}")

    @property
    def max_runners(self) -> int:
        """Blocks after the host's, capped at MAX_RUNNERS (the seed's /16s give its 255)."""
        return min(MAX_RUNNERS, (1 << (self.runner_prefix - self.host_prefix)) - 1)

    def vni(self, runner_id: int) -> int:
        return self.vxlan_id_base + runner_id

    def runner(self, runner_id: int) -> RunnerAddresses:
        if not 1 <= runner_id <= self.max_runners:
            raise PlanError(f"runner id {runner_id} is outside 1..{self.max_runners}")
        base = self.network.network_address + runner_id * self.block_size
        return RunnerAddresses(
            runner_id=runner_id,
            vni=self.vni(runner_id),
            subnet=IPv4Network((int(base), self.runner_prefix)),  # no string parse: 4,095 a pass
            gateway=base + GATEWAY_OFFSET,
            host_ip_on_subnet=base + HOST_ON_SUBNET_OFFSET,
            host_interface=tunnel_name(runner_id),
        )
