"""A node's whole state taken in one pass: the input of diagnosis, status and the TUI.

A plain frozen value, no I/O: `krnet.core.observe.gather` reads the kernel, firewall, Docker and
the record into it, diagnosis runs over it without touching anything, and a snapshot can be
recorded to JSON and replayed in tests or sent to a remote TUI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from krnet.core.model.node_state import DockerState, LinkInfo, ProbeResult, RouteInfo, RuleInfo
from krnet.core.model.records import EventRecord, RunnerRecord
from krnet.core.model.runner_state import RunnerState
from krnet.core.model.settings import Mode, Settings


@dataclass(frozen=True)
class NodeSnapshot:
    """Everything diagnosis, status and the TUI need about one node at one moment."""

    taken_at: datetime
    mode: Mode
    # the settings this node runs by: on a runner holding an allocation, its own settings with
    # the host's overlay scheme from that allocation (`local_settings` keeps its own then)
    settings: Settings
    runners: tuple[RunnerRecord, ...] = ()
    links: Mapping[str, LinkInfo] = field(default_factory=dict)
    routes: tuple[RouteInfo, ...] = ()
    rules: tuple[RuleInfo, ...] = ()
    guard_allowlist: tuple[str, ...] = ()
    docker: DockerState | None = None  # None on a host (no Docker role there)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    underlay_link: str | None = None
    underlay_mtu: int | None = None
    probes: Mapping[int, ProbeResult] = field(default_factory=dict)
    events: tuple[EventRecord, ...] = ()
    # parts that could not be read, as "<part>: <reason>" with part one of kernel, firewall,
    # docker, sysctl, record, probe, settings (e.g. "firewall: iptables is not installed");
    # checks of an unread part are skipped, and diagnosis says so
    errors: tuple[str, ...] = ()
    hostname: str = ""
    runner_state: RunnerState | None = None  # a runner agent's account of itself
    local_settings: Settings | None = None  # a runner's own settings, when `settings` differ
