"""The Firewall view: expected rules present or missing with their counters, and the port guard."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text

from krnet.core.model.node_state import RuleInfo
from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Context
from krnet.core.observe.diagnose.firewall import expected_rules, guard_drops, guard_peers
from krnet.tui.glyphs import mark, problems_or
from krnet.tui.model import ViewData
from krnet.tui.rows import Row
from krnet.tui.table import TableView

# a rule's verdict has a column of its own, so cutting the match to fit never hides it
COLUMNS = ("STATE", "TABLE", "CHAIN", "RULE", "VERDICT", "PACKETS", "BYTES")
SQUEEZE = {"RULE": 20}
DROP = ("TABLE", "BYTES")  # the chain names the table; packets say whether it matches
STATES = {
    "present": mark(PASS, "present"),
    "MISSING": mark(FAIL, "MISSING"),
    "extra": mark(WARN, "extra"),
}


def firewall_rows(data: ViewData) -> list[Row]:
    """Every rule the plan expects (present or missing), then krnet rules it does not expect."""
    if Context(data.snapshot).unread("firewall"):
        return []
    expected = expected_rules(Context(data.snapshot))
    found = {_identity(rule): rule for rule in data.snapshot.rules}
    wanted = {_identity(rule) for rule in expected}
    rows = [_row(found.get(_identity(rule), rule), _identity(rule) in found) for rule in expected]
    rows += [_row(rule, None) for key, rule in found.items() if key not in wanted]
    return rows


def _identity(rule: RuleInfo) -> tuple[str, str, str]:
    return (rule.table, rule.chain, rule.spec)


def _row(rule: RuleInfo, present: bool | None) -> Row:
    state = "extra" if present is None else "present" if present else "MISSING"
    counters = (rule.packets, rule.bytes) if present is not False else (None, None)
    match, verdict = split_verdict(rule.spec)
    cells: tuple[RenderableType, ...] = (
        STATES[state],
        rule.table,
        rule.chain,
        match,
        verdict,
        *("-" if value is None else f"{value:,}" for value in counters),
    )
    key = "|".join(_identity(rule))
    return Row(key, cells, (state, rule.table, rule.chain, match, verdict, *counters))


def split_verdict(spec: str) -> tuple[str, str]:
    """`-s 10.0.0.0/8 -j ACCEPT` as its match `-s 10.0.0.0/8` and verdict `ACCEPT`."""
    match, jump, verdict = f" {spec}".rpartition(" -j ")
    if not jump:
        return spec, "-"
    return match.strip() or "(every packet)", verdict


def guard_summary(data: ViewData) -> Text:
    """The port guard in one line: on/off, allowed peers, drops."""
    settings = data.snapshot.settings
    port = settings.overlay_vxlan_port
    if not settings.vxlan_port_guard:
        return Text(f"▲ port guard off: UDP {port} is open to anyone", style="yellow")
    ctx = Context(data.snapshot)
    allowed = data.snapshot.guard_allowlist
    drops = guard_drops(ctx)
    summary = f"port guard on UDP {port}: {len(allowed)} peer(s) allowed · {drops:,} dropped"
    # the allow-list is one set behind one rule: its drift shows here, not as a rule's state
    want, have = set(guard_peers(ctx)), set(allowed)
    counts = ((len(want - have), "missing"), (len(have - want), "extra"))
    drift = [f"{count} {what}" for count, what in counts if count]
    if drift:
        return Text(f"✖ {summary} · allow-list drift: {', '.join(drift)}", style="bold red")
    return Text(summary)


def guard_detail(data: ViewData, key: str | None = None) -> Text:
    """Allow-list expected against actual, and every firewall problem with its fix."""
    ctx = Context(data.snapshot)
    want, have = set(guard_peers(ctx)), set(data.snapshot.guard_allowlist)
    text = Text()
    if key is not None:
        table, chain, spec = key.split("|", 2)
        text.append(f"-t {table} -A {chain} {spec}\n", style="bold")
    if ctx.settings.vxlan_port_guard:
        text.append("allow-list: ")
        for peer in sorted(want | have):
            style = "green" if peer in want and peer in have else "bold red"
            mark = (
                ""
                if peer in want and peer in have
                else " (missing)"
                if peer in want
                else " (extra)"
            )
            text.append(f"{peer}{mark} ", style=style)
        text.append("\n")
    ours = ("firewall", "port_guard")
    text.append(
        problems_or(data.checks, lambda c: c.check in ours, "every expected rule is in place")
    )
    return text


class FirewallView(TableView):
    """krnet's chains as the plan wants them and as iptables holds them."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    DROP = DROP
    rows = staticmethod(firewall_rows)
    summary = staticmethod(guard_summary)
    detail = staticmethod(guard_detail)
