"""The Runners view: every allocation, sortable and filterable, with a detail pane per runner."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from ipaddress import IPv4Address

from rich.console import RenderableType
from rich.text import Text

from krnet.core.model.node_state import ProbeResult
from krnet.core.model.plan import RUNNER_TUNNEL
from krnet.core.model.records import ACTIVE, RunnerRecord
from krnet.core.observe.diagnose.check import PASS, SEVERITY
from krnet.core.observe.diagnose.engine import format_age
from krnet.tui.glyphs import health, problem_lines
from krnet.tui.model import ViewData
from krnet.tui.rows import Row
from krnet.tui.table import TableView

COLUMNS = ("ID", "RUNNER", "HEALTH", "PHYSICAL IP", "VNI", "SUBNET", "STATUS", "LAST SEEN", "PROBE")
SQUEEZE = {"RUNNER": 16}
DROP = ("VNI", "STATUS", "SUBNET")  # derived from the id, or said by HEALTH; all in the detail


def runner_rows(data: ViewData) -> list[Row]:
    """One row per runner in the record."""
    now = data.snapshot.taken_at
    rows = []
    for runner in data.snapshot.runners:
        status = data.health.get(runner.runner_id, PASS)
        inactive = runner.status != ACTIVE
        probe = data.snapshot.probes.get(runner.runner_id)
        age = (now - runner.last_seen).total_seconds()
        cells = (
            str(runner.runner_id),
            runner.hostname,
            health(status, inactive),
            runner.physical_ip,
            str(runner.vni),
            runner.subnet,
            Text(runner.status, style="dim" if inactive else ""),
            f"{format_age(now - runner.last_seen)} ago",
            probe_cell(probe),
        )
        sort = (
            runner.runner_id,
            runner.hostname,
            -SEVERITY[status],
            _address_key(runner.physical_ip),
            runner.vni,
            _address_key(runner.subnet.split("/")[0]),
            runner.status,
            age,
            _probe_key(probe),
        )
        rows.append(Row(str(runner.runner_id), cells, sort))
    return rows


def probe_cell(probe: ProbeResult | None) -> str:
    """`0.26 ms`, `40% loss`, or `-` when not probed."""
    if probe is None or probe.sent == 0:
        return "-"
    if probe.loss >= 1:
        return "lost" if probe.small_received == 0 else "black hole"
    rtt = f"{probe.rtt_ms:.2f} ms" if probe.rtt_ms is not None else "?"
    return rtt if probe.loss == 0 else f"{rtt} {probe.loss:.0%} loss"


def _probe_key(probe: ProbeResult | None) -> float | None:
    if probe is None or probe.sent == 0:
        return None
    return 1e9 * probe.loss + (probe.rtt_ms or 0.0)


@lru_cache(maxsize=8192)
def _address_key(text: str) -> int | str:
    """An address as the number it sorts by (parsed once: a refresh asks for every runner's)."""
    try:
        return int(IPv4Address(text))
    except ValueError:
        return text


def runner_detail(data: ViewData, key: str | None) -> RenderableType:
    """Everything about one runner: addresses, tunnel, what it reported, probe, problems."""
    runner = next((r for r in data.snapshot.runners if str(r.runner_id) == key), None)
    if runner is None:
        return Text("no runner selected", style="dim")
    snapshot = data.snapshot
    now = snapshot.taken_at
    rid = runner.runner_id
    text = Text()
    text.append(f"runner {rid} · {runner.hostname} · {runner.physical_ip}", style="bold")
    text.append(f" · {runner.status}, last seen {format_age(now - runner.last_seen)} ago\n")
    text.append(_addresses(data, runner))
    text.append(
        f"reported: VNI base {runner.vxlan_id} · port {runner.vxlan_port} · MTU {runner.mtu}"
    )
    text.append(f" · first seen {_iso(runner.first_seen)}\n")
    probe = snapshot.probes.get(rid)
    if probe is not None and probe.sent:
        text.append(f"probe: {probe.received}/{probe.sent} at full MTU, ")
        text.append(f"{probe.small_received}/{probe.small_sent} small, {probe_cell(probe)}")
        last = f"{format_age(now - probe.last_success)} ago" if probe.last_success else "never"
        text.append(f", last success {last}\n")
    if snapshot.settings.overlay_mode == "direct":
        text.append(direct_paths_line(runner, now))
    problems = [c for c in data.checks if c.runner_id == rid and c.status != PASS]
    text.append(problem_lines(problems) if problems else Text("no problems\n", style="green"))
    return text


def direct_paths_line(runner: RunnerRecord, now: datetime) -> Text:
    """Direct mode: where this runner's traffic to each other runner goes, as it reported."""
    pairs = runner.report.direct_peers
    if not pairs:
        return Text("direct paths: none reported yet\n", style="dim")
    text = Text("direct paths:")
    for pair in pairs:
        style = "" if pair.path == "direct" else "yellow"
        since = format_age(now - pair.since)
        text.append(f" {pair.runner_id} {pair.path} ({since})", style=style)
    return text.append("\n")


def _addresses(data: ViewData, runner: RunnerRecord) -> Text:
    settings = data.snapshot.settings
    addresses = settings.plan().runner(runner.runner_id)
    line = f"VNI {runner.vni} · subnet {runner.subnet} · gateway {addresses.gateway}"
    line += f" · host {addresses.host_ip_on_subnet}"
    tunnel = addresses.host_interface if data.snapshot.mode == "host" else RUNNER_TUNNEL
    link = data.snapshot.links.get(tunnel)
    if link is not None:
        state = "up" if link.up else "DOWN"
        line += f" · {tunnel} {state}, MTU {link.mtu}"
        if link.mtu != settings.overlay_mtu:
            line += f" (want {settings.overlay_mtu})"
    return Text(line + "\n")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def runner_summary(data: ViewData) -> Text:
    runners = data.snapshot.runners
    active = sum(1 for r in runners if r.status == ACTIVE)
    mode = " · direct mode" if data.snapshot.settings.overlay_mode == "direct" else ""
    return Text(
        f"{len(runners)} runners · {active} active · {len(data.health)} with problems{mode}"
    )


class RunnersView(TableView):
    """Allocations of this node (the host's runners, or a runner's own)."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    DROP = DROP
    rows = staticmethod(runner_rows)
    summary = staticmethod(runner_summary)
    detail = staticmethod(runner_detail)
