"""The MTU view: the chain from the underlay to every overlay link, and each mismatch's fix."""

from __future__ import annotations

from rich.text import Text

from krnet.core.model.plan import VXLAN_OVERHEAD
from krnet.core.model.records import UNREPORTED
from krnet.core.observe.diagnose.check import FAIL, PASS, Check, Context
from krnet.core.observe.diagnose.engine import MTU_CHECKS
from krnet.tui.glyphs import mark, problems_or, unseen
from krnet.tui.model import ViewData
from krnet.tui.rows import Row
from krnet.tui.table import TableView

COLUMNS = ("WHERE", "WHAT", "MTU", "EXPECTED", "STATE")
SQUEEZE = {"WHERE": 14, "WHAT": 16}  # both name runners; the detail names them whole


def mtu_rows(data: ViewData) -> list[Row]:
    """Underlay, every overlay link and network here, and each runner's end and setting."""
    ctx = Context(data.snapshot)
    mtu = ctx.settings.overlay_mtu
    rows: list[Row] = []

    def add(key: str, where: str, what: str, actual: int | None, want: int, at_least: bool) -> None:
        ok = actual is not None and (actual >= want if at_least else actual == want)
        expected = f"≥ {want}" if at_least else str(want)
        state = (
            unseen("unknown")
            if actual is None
            else mark(PASS, "ok")
            if ok
            else mark(FAIL, "MISMATCH")
        )
        cells = (where, what, "-" if actual is None else str(actual), expected, state)
        rows.append(Row(key, cells, (where, what, actual, want, ok)))

    underlay = data.snapshot.underlay_link
    add(
        "underlay",
        underlay or "underlay",
        "underlay link (overlay_mtu + 50)",
        data.snapshot.underlay_mtu,
        mtu + VXLAN_OVERHEAD,
        True,
    )
    if not ctx.host:
        bridge = ctx.link(ctx.settings.overlay_bridge_name)
        if bridge is not None:
            add("bridge", bridge.name, "overlay bridge", bridge.mtu, mtu, False)
        docker = data.snapshot.docker
        for network in docker.networks if docker else ():
            if network.name == ctx.settings.overlay_network_name:
                add("docker", network.name, "Docker overlay network", network.mtu, mtu, False)
    for runner in ctx.runners:
        rid = runner.runner_id
        link = ctx.link(ctx.tunnel_name(rid))
        if link is not None:
            add(f"tunnel:{rid}", link.name, f"tunnel of {runner.hostname}", link.mtu, mtu, False)
        observed = runner.report.mtu if ctx.host else None
        if observed is not None:
            add(
                f"far:{rid}",
                f"{runner.hostname} vxlan0",
                "far end (heartbeat)",
                observed,
                mtu,
                False,
            )
        if ctx.host and runner.mtu != UNREPORTED:
            add(
                f"setting:{rid}",
                runner.hostname,
                "overlay_mtu it joined with",
                runner.mtu,
                mtu,
                False,
            )
    return rows


def mtu_chain(data: ViewData) -> Text:
    """`overlay_mtu 1450 + 50 VXLAN = 1500 ≤ eth0 1500`, coloured by whether it fits."""
    mtu = data.snapshot.settings.overlay_mtu
    underlay, link = data.snapshot.underlay_mtu, data.snapshot.underlay_link or "underlay"
    need = mtu + VXLAN_OVERHEAD
    if underlay is None:
        return Text(f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} VXLAN = {need} · underlay unknown")
    fits = need <= underlay
    sign = "≤" if fits else ">"
    line = f"overlay_mtu {mtu} + {VXLAN_OVERHEAD} VXLAN = {need} {sign} {link} {underlay}"
    return Text(f"{'✔' if fits else '✖'} {line}", style="green" if fits else "bold red")


def mtu_detail(data: ViewData, key: str | None) -> Text:
    """The highlighted row named whole, then every MTU mismatch with its explanation and fix."""
    text = Text()
    row = next((row for row in mtu_rows(data) if row.key == key), None)
    if row is not None:
        where, what = row.sort[:2]
        text.append(f"{where}: {what}\n", style="bold")
    text.append(problems_or(data.checks, _about_mtu, "no MTU mismatches; full-size DF probes pass"))
    return text


def _about_mtu(check: Check) -> bool:
    return check.check in MTU_CHECKS or (
        check.check == "settings_match" and "overlay_mtu" in check.detail
    )


class MtuView(TableView):
    """Every MTU that must agree, and what to do where it does not."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    rows = staticmethod(mtu_rows)
    summary = staticmethod(mtu_chain)
    detail = staticmethod(mtu_detail)
