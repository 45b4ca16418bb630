"""The Interfaces view: every link with its VXLAN attributes, state and live rx/tx rates."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text

from krnet.core.model.node_state import LinkInfo
from krnet.core.model.plan import RUNNER_TUNNEL, runner_id_from_tunnel
from krnet.core.observe.diagnose.check import FAIL
from krnet.tui.glyphs import mark
from krnet.tui.model import HISTORY, LinkRates, ViewData, human_rate, spark
from krnet.tui.rows import Row
from krnet.tui.table import TableView

COLUMNS = (
    "NAME",
    "KIND",
    "VNI",
    "LOCAL",
    "REMOTE",
    "PORT",
    "MTU",
    "STATE",
    "MASTER",
    "ADDRESSES",
    "RX bit/s",
    "TX bit/s",
)
SQUEEZE = {"ADDRESSES": 16, "MASTER": 8}
# the same on every tunnel or kind of link first; the detail pane shows them all
DROP = ("LOCAL", "PORT", "KIND", "MASTER", "VNI", "REMOTE")
SPARK_WIDTH = 6  # the detail pane has the long history


def overlay_link(data: ViewData, name: str) -> bool:
    """A link that must carry overlay_mtu: a tunnel, or a runner's bridge."""
    settings = data.snapshot.settings
    return (
        name == RUNNER_TUNNEL
        or runner_id_from_tunnel(name) is not None
        or (data.snapshot.mode == "runner" and name == settings.overlay_bridge_name)
    )


def interface_rows(data: ViewData) -> list[Row]:
    """One row per link, in the kernel's index order."""
    mtu = data.snapshot.settings.overlay_mtu
    rows = []
    for link in sorted(data.snapshot.links.values(), key=lambda link: link.index):
        vxlan = link.vxlan
        rates = data.rates.get(link.name, LinkRates())
        wrong_mtu = overlay_link(data, link.name) and link.mtu != mtu
        cells = (
            link.name,
            link.kind or "-",
            str(vxlan.vni) if vxlan else "",
            (vxlan.local or "-") if vxlan else "",
            (vxlan.remote or "-") if vxlan else "",
            str(vxlan.port) if vxlan else "",
            mark(FAIL, str(link.mtu)) if wrong_mtu else str(link.mtu),
            "up" if link.up else mark(FAIL, "DOWN"),
            link.master or "",
            " ".join(link.addresses),
            _rate_cell(rates.rx, rates.rx_history),
            _rate_cell(rates.tx, rates.tx_history),
        )
        sort = (
            link.name,
            link.kind,
            vxlan.vni if vxlan else None,
            vxlan.local if vxlan else None,
            vxlan.remote if vxlan else None,
            vxlan.port if vxlan else None,
            link.mtu,
            link.up,
            link.master,
            " ".join(link.addresses),
            rates.rx,
            rates.tx,
        )
        rows.append(Row(link.name, cells, sort))
    return rows


def _rate_cell(rate: float | None, history: tuple[float, ...]) -> str:
    return f"{human_rate(rate):>6} {spark(history, SPARK_WIDTH)}"


def interface_detail(data: ViewData, key: str | None) -> RenderableType:
    """One link in full, with its rate history as wide sparklines."""
    link = data.snapshot.links.get(key or "")
    if link is None:
        return Text("no interface selected", style="dim")
    rates = data.rates.get(link.name, LinkRates())
    text = Text()
    text.append(f"{link.name}", style="bold")
    text.append(f" · {link.kind or 'device'} · index {link.index} · MAC {link.mac or '-'}")
    text.append(f" · MTU {link.mtu} · {'up' if link.up else 'DOWN'}\n")
    text.append(_vxlan_line(link))
    text.append(f"rx {human_rate(rates.rx):>7} {spark(rates.rx_history, HISTORY)}\n")
    text.append(f"tx {human_rate(rates.tx):>7} {spark(rates.tx_history, HISTORY)}\n")
    text.append(
        f"totals: rx {link.rx_bytes:,} bytes / {link.rx_packets:,} packets · "
        f"tx {link.tx_bytes:,} bytes / {link.tx_packets:,} packets\n",
        style="dim",
    )
    return text


def _vxlan_line(link: LinkInfo) -> str:
    if link.vxlan is None:
        return f"addresses: {' '.join(link.addresses) or '-'} · master {link.master or '-'}\n"
    v = link.vxlan
    learning = "learning" if v.learning else "nolearning"
    return (
        f"VXLAN VNI {v.vni} · local {v.local or '-'} · remote {v.remote or '-'} · "
        f"dstport {v.port} · {learning} · addresses {' '.join(link.addresses) or '-'}\n"
    )


def interface_summary(data: ViewData) -> Text:
    links = data.snapshot.links.values()
    vxlan = sum(1 for link in links if link.vxlan is not None)
    down = sum(1 for link in links if not link.up)
    return Text(f"{len(links)} links · {vxlan} VXLAN · {down} down")


class InterfacesView(TableView):
    """Links of this node, tunnels first-class."""

    COLUMNS = COLUMNS
    SQUEEZE = SQUEEZE
    DROP = DROP
    rows = staticmethod(interface_rows)
    summary = staticmethod(interface_summary)
    detail = staticmethod(interface_detail)
