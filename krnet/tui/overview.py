"""The Overview: who this node is, the counts, a hub-and-spoke picture by health, worst first."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical, VerticalScroll
from textual.widgets import Static

from krnet.core.model.plan import HOST_DEVICE, RUNNER_TUNNEL
from krnet.core.model.records import ACTIVE, RunnerRecord
from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Context
from krnet.core.observe.diagnose.engine import worst_first
from krnet.tui.glyphs import GLYPH, STYLE, glyph, problem_lines
from krnet.tui.model import ViewData
from krnet.tui.runners import probe_cell

PROBLEMS_SHOWN = 40
# spokes drawn at most (a full /16 pool); past that, those in trouble first and a count of the
# rest: a Static lays out every line it holds, and the Runners view lists every runner anyway
SPOKES_SHOWN = 255


def summary_text(data: ViewData) -> Text:
    """Three lines: identity and addresses, overlay settings and counts, check totals."""
    snapshot = data.snapshot
    settings = snapshot.settings
    ctx = Context(snapshot)
    text = Text()
    text.append(f"{snapshot.mode.upper()} {snapshot.hostname or '?'}", style="bold")
    if ctx.host:
        text.append(f" · overlay {ctx.plan.host_interface} on {HOST_DEVICE}")
        text.append(f" · reachable {settings.host_reachable_address}")
    elif ctx.runners:
        addresses = ctx.plan.runner(ctx.runners[0].runner_id)
        text.append(f" · runner {addresses.runner_id} · subnet {addresses.subnet}")
        text.append(f" · gateway {addresses.gateway}")
    if snapshot.underlay_link:
        text.append(f" · underlay {snapshot.underlay_link} MTU {snapshot.underlay_mtu}")
    active = sum(1 for runner in ctx.runners if runner.status == ACTIVE)
    text.append(f"\nVNI base {settings.overlay_vxlan_id} · UDP {settings.overlay_vxlan_port}")
    text.append(f" · MTU {settings.overlay_mtu} · runners {len(ctx.runners)}: {active} active,")
    text.append(f" {len(ctx.runners) - active} inactive")
    if ctx.host:
        text.append(f" · {ctx.plan.max_runners - len(ctx.runners)} ids free")
    text.append("\nchecks:")
    for status in (FAIL, WARN, PASS):
        count = sum(1 for check in data.checks if check.status == status)
        text.append(f" {GLYPH[status]} {count} {status}", style=STYLE[status] if count else "dim")
    text.append(f" · as of {snapshot.taken_at.strftime('%H:%M:%SZ')}", style="dim")
    return text


def spokes_text(data: ViewData) -> Text:
    """The hub and one spoke per runner, each marked by its health."""
    snapshot = data.snapshot
    ctx = Context(snapshot)
    text = Text(no_wrap=True, overflow="ellipsis")
    if ctx.host:
        text.append("◉ ", style="bold")
        text.append(
            f"{snapshot.hostname or 'host'} {snapshot.settings.host_reachable_address}",
            style="bold",
        )
        text.append(f" ({ctx.plan.host_interface})\n", style="dim")
    else:
        tunnel = ctx.link(RUNNER_TUNNEL)
        remote = tunnel.vxlan.remote if tunnel and tunnel.vxlan else "?"
        text.append(f"◉ host {remote}\n", style="bold")
    if not ctx.runners:
        text.append("└─ no runners yet\n", style="dim")
    shown = _spoked(data, ctx.runners)
    more = len(ctx.runners) - len(shown)
    for position, runner in enumerate(shown):
        last = position == len(shown) - 1 and not more
        status = data.health.get(runner.runner_id, PASS)
        inactive = runner.status != ACTIVE
        text.append("└─" if last else "├─", style="dim")
        text.append_text(glyph(status, inactive))
        text.append(
            f" {ctx.tunnel_name(runner.runner_id):<7} {runner.hostname[:14]:<14}"
            f" {runner.physical_ip:<15} ",
            style="dim" if inactive else "",
        )
        text.append(_spoke_note(data, runner.runner_id, inactive), style=STYLE[status])
        text.append("\n")
    if more:
        text.append(f"└─ … and {more:,} more runners (2 Runners lists them all)\n", style="dim")
    return text


def _spoked(data: ViewData, runners: tuple[RunnerRecord, ...]) -> list[RunnerRecord]:
    """Every runner up to SPOKES_SHOWN; past that, those with problems first, then the rest."""
    if len(runners) <= SPOKES_SHOWN:
        return list(runners)
    troubled = [r for r in runners if r.runner_id in data.health]
    fine = [r for r in runners if r.runner_id not in data.health]
    return (troubled + fine)[:SPOKES_SHOWN]


def _spoke_note(data: ViewData, runner_id: int, inactive: bool) -> str:
    names = sorted({c.check for c in data.checks if c.runner_id == runner_id and c.status != PASS})
    if names:
        return ", ".join(names)
    probe = data.snapshot.probes.get(runner_id)
    if inactive:
        return "inactive"
    if probe is not None:
        return probe_cell(probe)
    return "not probed yet" if data.snapshot.mode == "host" else "ok"


def problems_text(data: ViewData) -> Text:
    """Every failure and warning, worst first, each with its fix."""
    problems = [check for check in worst_first(data.checks) if check.status != PASS]
    if not problems:
        return Text(f"{GLYPH[PASS]} all {len(data.checks)} checks pass", style=STYLE[PASS])
    return problem_lines(problems, PROBLEMS_SHOWN)


class OverviewView(Vertical):
    """Summary on top; the spoke picture and the problems side by side (stacked when narrow)."""

    def compose(self) -> ComposeResult:
        yield Static(id="overview-summary")
        with Container(id="overview-body"):
            with VerticalScroll(id="overview-problems-box"):
                yield Static(id="overview-problems")
            with VerticalScroll(id="overview-spokes-box"):
                yield Static(id="overview-spokes")

    def show(self, data: ViewData) -> None:
        self.query_one("#overview-summary", Static).update(summary_text(data))
        self.query_one("#overview-problems", Static).update(problems_text(data))
        self.query_one("#overview-spokes", Static).update(spokes_text(data))
