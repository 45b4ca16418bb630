"""The VNIs view: each runner's VNI as planned, recorded and seen on both ends; conflicts."""

from __future__ import annotations

from rich.text import Text

from krnet.core.observe.diagnose.check import FAIL, PASS, WARN, Context
from krnet.tui.glyphs import mark, problems_or, unseen
from krnet.tui.model import ViewData
from krnet.tui.rows import Row
from krnet.tui.table import TableView

COLUMNS = ("ID", "RUNNER", "EXPECTED", "RECORD", "THIS END", "FAR END", "PORT", "STATE")
SQUEEZE = {"RUNNER": 16}
DROP = ("PORT", "EXPECTED")  # the same on every link; overlay_vxlan_id + id: in the summary


def vni_rows(data: ViewData) -> list[Row]:
    """A row per runner, then one per VXLAN link krnet did not make (possible conflicts)."""
    ctx = Context(data.snapshot)
    rows = []
    for runner in ctx.runners:
        rid = runner.runner_id
        expected = ctx.plan.vni(rid)
        link = ctx.link(ctx.tunnel_name(rid))
        this_end = link.vxlan.vni if link and link.vxlan else None
        far_end = runner.report.vni if ctx.host else None
        seen = [vni for vni in (runner.vni, this_end, far_end) if vni is not None]
        ok = link is not None and all(vni == expected for vni in seen)
        values = (
            rid,
            runner.hostname,
            expected,
            runner.vni,
            this_end,
            far_end,
            link.vxlan.port if link and link.vxlan else None,
        )
        # the far end says nothing until the runner's first heartbeat after its join
        pending = ok and ctx.host and far_end is None
        state = unseen() if pending else mark(PASS, "ok") if ok else mark(FAIL, "MISMATCH")
        rows.append(Row(str(rid), (*map(_cell, values), state), (*values, None if pending else ok)))
    for link in data.snapshot.links.values():
        if link.vxlan is None or ctx.is_krnet_tunnel(link.name):
            continue
        foreign = (None, f"foreign {link.name}", None, None, link.vxlan.vni, None, link.vxlan.port)
        state = mark(WARN, "foreign")
        rows.append(Row(f"link:{link.name}", (*map(_cell, foreign), state), (*foreign, False)))
    return rows


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def vni_summary(data: ViewData) -> Text:
    settings = data.snapshot.settings
    return Text(
        f"VNI = overlay_vxlan_id {settings.overlay_vxlan_id} + runner id · "
        f"UDP port {settings.overlay_vxlan_port} · far end: the runner's heartbeat"
    )


def vni_detail(data: ViewData, key: str | None) -> Text:
    """The highlighted runner named whole, then every VNI conflict with its fix."""
    text = Text()
    runner = next((r for r in data.snapshot.runners if str(r.runner_id) == key), None)
    if runner is not None:
        text.append(f"runner {runner.runner_id} · {runner.hostname}\n", style="bold")
    text.append(
        problems_or(data.checks, lambda check: check.check == "vni_map", "no VNI conflicts")
    )
    return text


class VnisView(TableView):
    """Expected against actual VNIs, and VXLAN links that are not krnet's."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    DROP = DROP
    rows = staticmethod(vni_rows)
    summary = staticmethod(vni_summary)
    detail = staticmethod(vni_detail)
