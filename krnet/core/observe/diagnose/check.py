"""One diagnosis result, and the read-only view of a snapshot every check function works from."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Interface
from typing import Literal, TypeVar

from krnet.core.model.node_state import LinkInfo, RouteInfo
from krnet.core.model.plan import (
    RUNNER_TUNNEL,
    OverlayPlan,
    RunnerAddresses,
    runner_id_from_tunnel,
    tunnel_name,
)
from krnet.core.model.records import RunnerRecord
from krnet.core.model.settings import Settings
from krnet.core.model.snapshot import NodeSnapshot

Status = Literal["pass", "warn", "fail"]
PASS: Status = "pass"
WARN: Status = "warn"
FAIL: Status = "fail"
SEVERITY: dict[Status, int] = {PASS: 0, WARN: 1, FAIL: 2}

T = TypeVar("T")

RECONCILE = "restart krnet serve (systemctl restart krnet): its reconcile repairs this"


@dataclass(frozen=True)
class Check:
    """A check's verdict; `fix` is a command or setting a person can apply ("" on pass)."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    runner_id: int | None = None  # the runner a problem belongs to (health colours, mismatches)

    def to_json(self) -> dict[str, str]:
        """The `krnet doctor --json` form (docs/design.md): check, status, detail, fix."""
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def passed(check: str, problems: list[Check], detail: str) -> list[Check]:
    """The problems found, or one passing line saying what was verified."""
    return problems or [Check(check, PASS, detail)]


def ip_of(cidr_or_ip: str) -> str:
    """`10.1.0.254/16` -> `10.1.0.254`; plain addresses unchanged."""
    return cidr_or_ip.split("/", 1)[0]


def _natural(name: str) -> tuple[str, int]:
    """vxkr2 before vxkr10."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem) :]
    return (stem, int(digits) if digits else -1)


@dataclass(frozen=True)
class Context:
    """A snapshot with the derived facts several checks share, each derived once per diagnosis.

    At 4,095 runners a fact rebuilt per check or per runner (a runner's addresses, a scan of
    every route) is what makes the diagnosis slow, so checks look facts up here.
    """

    snapshot: NodeSnapshot
    _derived: dict[object, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def settings(self) -> Settings:
        return self.snapshot.settings

    @cached_property
    def plan(self) -> OverlayPlan:
        return self.settings.plan()

    @property
    def host(self) -> bool:
        return self.snapshot.mode == "host"

    @property
    def runners(self) -> tuple[RunnerRecord, ...]:
        return self.snapshot.runners

    @cached_property
    def local_addresses(self) -> frozenset[str]:
        """Every IPv4 address on a link of this node, without prefix."""
        return frozenset(
            ip_of(cidr) for link in self.snapshot.links.values() for cidr in link.addresses
        )

    def once(self, derive: Callable[[Context], T]) -> T:
        """`derive(self)`, computed on the first call only (the firewall plan, the guard peers)."""
        if derive not in self._derived:
            self._derived[derive] = derive(self)
        return self._derived[derive]  # type: ignore[return-value]

    def addresses(self, runner_id: int) -> RunnerAddresses:
        """The plan's addresses of a runner, derived once however many checks ask."""
        key = ("addresses", runner_id)
        if key not in self._derived:
            self._derived[key] = self.plan.runner(runner_id)
        return self._derived[key]  # type: ignore[return-value]

    @cached_property
    def routes_to(self) -> dict[str, tuple[RouteInfo, ...]]:
        """The snapshot's routes by destination, so a route is found without a scan of all."""
        found: dict[str, list[RouteInfo]] = {}
        for route in self.snapshot.routes:
            found.setdefault(route.dst, []).append(route)
        return {dst: tuple(routes) for dst, routes in found.items()}

    def tunnel_name(self, runner_id: int) -> str:
        """The runner's tunnel on this node: `vxkrN` on the host, `vxlan0` on a runner."""
        return tunnel_name(runner_id) if self.host else RUNNER_TUNNEL

    def link(self, name: str) -> LinkInfo | None:
        return self.snapshot.links.get(name)

    @staticmethod
    def in_natural_order(names: Iterable[str]) -> list[str]:
        """Link names sorted so that vxkr2 comes before vxkr10."""
        return sorted(names, key=_natural)

    def is_krnet_tunnel(self, name: str) -> bool:
        """`vxkrN` on a host, `vxlan0` on a runner."""
        return runner_id_from_tunnel(name) is not None if self.host else name == RUNNER_TUNNEL

    def unread(self, part: str) -> bool:
        """Whether gathering `part` ("kernel", "firewall", "docker", ...) failed."""
        return any(error.startswith(f"{part}:") for error in self.snapshot.errors)

    def expected_interface(self, runner_id: int) -> IPv4Interface:
        """The address the runner's tunnel end carries on this node (host+254 or gateway)."""
        addresses = self.addresses(runner_id)
        return addresses.host_interface_address if self.host else addresses.gateway_interface

    def runner_label(self, runner: RunnerRecord) -> str:
        return f"runner {runner.runner_id} ({runner.hostname}, {runner.physical_ip})"
