"""Each runner's report of its own end, judged once; `krnet doctor` and `node overlay` word it.

`judge_far_end` is the one place that says where a runner's last heartbeat (its
`RunnerReport`) differs from what its record and this node's settings call for. The
`far_end` and `link_mtu` checks turn its findings into verdicts with fixes; `krnet node
overlay` renders them as its per-runner mismatches (`krnet.core.observe.status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.model.records import RunnerRecord
from krnet.core.model.settings import Settings
from krnet.core.observe.diagnose.check import FAIL, WARN, Check, Context, Status, passed

ReportKey = Literal["vni", "port", "mtu", "local", "bridge_mtu"]


@dataclass(frozen=True)
class EndDifference:
    """A value the runner reports for its end that is not the one it should have."""

    key: ReportKey
    link: str  # the runner's link that carries it: vxlan0 or the bridge
    reported: int | str
    expected: int | str


@dataclass(frozen=True)
class FarEnd:
    """What a runner's last report says about its end of the tunnel."""

    error: str | None = None  # it could not read its links
    missing: bool = False  # it has no vxlan0
    down: bool = False  # its vxlan0 is there but down
    differences: tuple[EndDifference, ...] = ()

    def difference(self, key: ReportKey) -> EndDifference | None:
        return next((found for found in self.differences if found.key == key), None)


def judge_far_end(record: RunnerRecord, settings: Settings) -> FarEnd:
    """Where the runner's report differs from its record and these settings."""
    report = record.report
    bridge, mtu = settings.overlay_bridge_name, settings.overlay_mtu
    expected: list[tuple[ReportKey, str, int | str | None, int | str]] = [
        ("vni", RUNNER_TUNNEL, report.vni, record.vni),
        ("port", RUNNER_TUNNEL, report.port, settings.overlay_vxlan_port),
        ("mtu", RUNNER_TUNNEL, report.mtu, mtu),
        ("local", RUNNER_TUNNEL, report.local, record.physical_ip),
        ("bridge_mtu", bridge, report.bridge_mtu, mtu),
    ]
    return FarEnd(
        error=report.error,
        missing=report.tunnel_present is False,
        down=report.tunnel_present is not False and report.tunnel_up is False,
        differences=tuple(
            EndDifference(key, link, reported, want)
            for key, link, reported, want in expected
            if reported is not None and reported != want
        ),
    )


def far_end_mismatches(end: FarEnd) -> list[str]:
    """The findings as `krnet node overlay` words them: what is wrong first, then each value."""
    if end.error:
        return [f"the runner could not read its links: {end.error}"]
    if end.missing:
        return [f"runner's {RUNNER_TUNNEL} is missing"]
    found = [f"runner's {RUNNER_TUNNEL} is down"] if end.down else []
    return found + [
        f"{diff.key}: runner's {diff.link} has {diff.reported}, expected {diff.expected}"
        for diff in end.differences
    ]


def check_far_ends(ctx: Context) -> list[Check]:
    """Each runner's own view of its end, from its last heartbeat."""
    problems = []
    for runner in ctx.runners:
        if not runner.report.empty:
            problems += [
                Check("far_end", status, detail, fix, runner.runner_id)
                for status, detail, fix in _far_end_problems(ctx, runner)
            ]
    return passed("far_end", problems, "every runner reports its end as planned")


def _far_end_problems(ctx: Context, runner: RunnerRecord) -> list[tuple[Status, str, str]]:
    report, end = runner.report, judge_far_end(runner, ctx.settings)
    who, name = f"runner {runner.runner_id} ({runner.hostname})", runner.hostname
    restart = f"on {name}: restart its agent (systemctl restart krnet); it rebuilds its end"
    found: list[tuple[Status, str, str]] = []
    if end.missing:
        found.append((FAIL, f"{who} has no {RUNNER_TUNNEL}", restart))
    elif end.down:
        found.append(
            (FAIL, f"{who}'s {RUNNER_TUNNEL} is down", f"on {name}: ip link set {RUNNER_TUNNEL} up")
        )
    if report.remote and ctx.local_addresses and report.remote not in ctx.local_addresses:
        found.append(
            (
                FAIL,
                f"{who}'s {RUNNER_TUNNEL} sends to {report.remote}, "
                "which is not an address of this host",
                restart,
            )
        )
    port = end.difference("port")
    if port is not None:
        found.append(
            (
                FAIL,
                f"{who}'s {RUNNER_TUNNEL} uses UDP port {port.reported}, the host {port.expected}",
                f"set overlay_vxlan_port = {port.expected} on {name} and restart its agent",
            )
        )
    if report.docker_available is False:
        found.append(
            (
                WARN,
                f"{who} cannot reach Docker: {report.docker_error or 'no answer'}",
                f"on {name}: systemctl start docker",
            )
        )
    return found
