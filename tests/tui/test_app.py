"""Pilot tests: every view and key binding of `krnet tui`, driven from recorded snapshots."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from textual.message import Message
from textual.widgets import DataTable, Input, TabbedContent

from krnet.core.model.snapshot import NodeSnapshot
from krnet.errors import KrnetError
from krnet.tui.app import VIEW_IDS, GatherFailed, KrnetApp, SnapshotReady
from krnet.tui.help import HelpScreen
from krnet.tui.table import TableView
from tests.tui.support import Replay, later, make_app, ready, snapshot, text_of

SIZE = (120, 40)


def table(app: KrnetApp, view_id: str) -> DataTable:
    return app.query_one(f"#{view_id}-view", TableView).table


def column(app: KrnetApp, view_id: str, label: str) -> list[str]:
    data_table = table(app, view_id)
    return [str(cell) for cell in data_table.get_column(label)]


async def test_overview_shows_node_counts_problems_and_spokes() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        summary = text_of(pilot, "#overview-summary")
        assert "HOST hub" in summary and "reachable 192.0.2.1" in summary
        assert "runners 5: 4 active, 1 inactive" in summary and "250 ids free" in summary
        problems = text_of(pilot, "#overview-problems").splitlines()
        assert problems[0].startswith("✖ link_mtu: vxkr2 has MTU 1400")
        assert any(line.startswith("▲ runner_silent") for line in problems)
        marks = [line[0] for line in problems if line[:1] in ("✖", "▲")]
        assert marks == sorted(marks, key=["✖", "▲"].index)  # worst first
        spokes = text_of(pilot, "#overview-spokes").splitlines()
        assert spokes[0].startswith("◉ hub 192.0.2.1")
        assert spokes[1].startswith("├─✔ vxkr1") and spokes[2].startswith("├─✖ vxkr2")
        assert spokes[-1].startswith("└─✔ vxkr5")


async def test_healthy_overview_says_all_pass() -> None:
    app = make_app("healthy_runner")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert text_of(pilot, "#overview-problems").startswith("✔ all 13 checks pass")
        assert text_of(pilot, "#overview-spokes").splitlines()[0] == "◉ host 192.0.2.1"


@pytest.mark.parametrize(("key", "view_id"), list(zip("1234567", VIEW_IDS, strict=True)))
async def test_number_keys_switch_views(key: str, view_id: str) -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press(key)
        assert app.active_view == view_id


async def test_tab_cycles_views_both_ways() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        seen = []
        for _ in VIEW_IDS:
            await pilot.press("tab")
            seen.append(app.active_view)
        assert seen == [*VIEW_IDS[1:], VIEW_IDS[0]]
        await pilot.press("shift+tab")
        assert app.active_view == VIEW_IDS[-1]


async def test_clicking_a_tab_switches_view() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.click("Tab#--content-tab-firewall")
        assert app.active_view == "firewall"
        assert app.focused is table(app, "firewall")


async def test_runners_table_detail_and_cursor() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2")
        assert column(app, "runners", "ID") == ["1", "2", "3", "4", "5"]
        assert column(app, "runners", "PROBE")[2:4] == ["lost", "black hole"]
        assert text_of(pilot, "#runners-view .detail").startswith("runner 1 · runner-1")
        await pilot.press("down")
        detail = text_of(pilot, "#runners-view .detail")
        assert (
            detail.startswith("runner 2 · runner-2") and "vxkr2 up, MTU 1400 (want 1450)" in detail
        )
        assert "fix: ip link set dev vxkr2 mtu 1450" in detail


async def test_runners_sort_by_key_and_by_header() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2", "s", "s", "s")  # ID, RUNNER, then HEALTH (worst first)
        assert column(app, "runners", "ID")[:3] == ["2", "3", "4"]
        assert "sorted by HEALTH ▲" in text_of(pilot, "#runners-view .status")
        view = app.query_one("#runners-view", TableView)
        view.sort_by(7)  # LAST SEEN, as a header click does
        view.sort_by(7)  # again: reversed
        await pilot.pause()
        assert column(app, "runners", "ID")[0] == "3"  # silent for 5 minutes
        assert "sorted by LAST SEEN ▼" in text_of(pilot, "#runners-view .status")


async def test_header_click_sorts() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2")
        runners = table(app, "runners")
        x = sum(column.get_render_width(runners) for column in runners.ordered_columns[:8])
        await pilot.click(runners, offset=(x + 1, 0))
        assert "sorted by PROBE ▲" in text_of(pilot, "#runners-view .status")
        assert column(app, "runners", "PROBE")[-2:] == ["lost", "black hole"]


async def test_filter_with_slash_enter_and_escape() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2", "slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"runner-3")
        assert column(app, "runners", "ID") == ["3"]
        assert "1 of 5" in text_of(pilot, "#runners-view .status")
        await pilot.press("enter")
        assert isinstance(app.focused, DataTable) and column(app, "runners", "ID") == ["3"]
        await pilot.press("escape")
        assert column(app, "runners", "ID") == ["1", "2", "3", "4", "5"]
        assert not app.query_one("#runners-view Input").has_class("shown")


async def test_interfaces_rates_and_sparklines_from_successive_snapshots() -> None:
    base = snapshot("healthy_host")
    app = KrnetApp(Replay([base, later(base, 2, 250_000), later(base, 4, 750_000)]), 3600, "t")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("3")
        names = column(app, "interfaces", "NAME")
        assert names[:3] == ["lo", "eth0", "kohaku-host"] and "vxkr3" in names
        assert column(app, "interfaces", "RX bit/s")[0].strip() == "-"
        await pilot.press("r")
        await ready(pilot)
        await pilot.press("r")
        await ready(pilot)
        rx = column(app, "interfaces", "RX bit/s")[1]
        assert rx.strip() == "2.0M ▅█"  # 1.0 Mbit/s, then 2.0 Mbit/s
        detail = text_of(pilot, "#interfaces-view .detail")
        assert detail.startswith("lo · device")
        await pilot.press("down", "down", "down")
        detail = text_of(pilot, "#interfaces-view .detail")
        assert "VXLAN VNI 101 · local 192.0.2.1 · remote 198.51.100.1 · dstport 4789" in detail


async def test_vnis_view_shows_mismatch_and_foreign_link() -> None:
    app = make_app("vni_conflict")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("4")
        assert column(app, "vnis", "STATE") == ["✔ ok", "✖ MISMATCH", "✔ ok", "▲ foreign"]
        assert column(app, "vnis", "THIS END")[1] == "101"
        assert "VNI 101 on port 4789 is used by vxkr1, vxkr2" in text_of(
            pilot, "#vnis-view .detail"
        )


async def test_mtu_view_shows_chain_mismatch_and_fix() -> None:
    app = make_app("mtu_mismatch")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("5")
        assert text_of(pilot, "#mtu-view .summary").startswith("✔ overlay_mtu 1450 + 50 VXLAN")
        rows = dict(zip(column(app, "mtu", "WHERE"), column(app, "mtu", "STATE"), strict=False))
        assert rows["vxkr1"] == "✖ MISMATCH" and rows["vxkr2"] == "✔ ok"
        detail = text_of(pilot, "#mtu-view .detail")
        assert "vxkr1 has MTU 1400, expected 1450" in detail
        assert "fix: ip link set dev vxkr1 mtu 1450" in detail


async def test_firewall_view_missing_rule_counters_and_guard() -> None:
    app = make_app("missing_forward_rule")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("6")
        states = dict(
            zip(column(app, "firewall", "RULE"), column(app, "firewall", "STATE"), strict=True)
        )
        assert states["-s 10.0.0.0/8"] == "✖ MISSING"
        assert states["-d 10.0.0.0/8"] == "✔ present"
        assert "-" in column(app, "firewall", "PACKETS")  # no counters for a missing rule
        assert text_of(pilot, "#firewall-view .summary").startswith(
            "port guard on UDP 4789: 3 peer"
        )
        detail = text_of(pilot, "#firewall-view .detail")
        assert "fix: iptables -t filter -A KRNET-FORWARD -s 10.0.0.0/8 -j ACCEPT" in detail


async def test_firewall_view_shows_guard_drift() -> None:
    app = make_app("guard_drift")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("6")
        detail = text_of(pilot, "#firewall-view .detail")
        assert "198.51.100.2 (missing)" in detail and "203.0.113.99 (extra)" in detail
        # the allow-list is an ipset set behind one rule: its drift is the guard's summary
        summary = text_of(pilot, "#firewall-view .summary")
        assert "allow-list drift: 1 missing, 1 extra" in summary


async def test_events_view_newest_first() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("7")
        assert column(app, "events", "KIND") == [
            "error",
            "reclaim",
            "join",
            "refused",
            "reconcile",
            "join",
        ]
        assert "xtables lock" in text_of(pilot, "#events-view .detail")


async def test_help_opens_and_closes() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark", "q")
        assert not isinstance(app.screen, HelpScreen) and app.is_running


async def test_footer_shows_the_keys() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("2")
        keys = {key for key, active in app.active_bindings.items() if active.binding.show}
        assert {"q", "question_mark", "r", "tab", "slash", "s"} <= keys


async def test_quit_key() -> None:
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("q")
        assert not app.is_running


async def test_refresh_key_gathers_again_and_posts_messages() -> None:
    seen: list[Message] = []
    source = Replay([snapshot("healthy_host")])
    app = KrnetApp(source, 3600, "t")
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)
        assert source.calls == 1
        await pilot.press("r")
        await ready(pilot)
        assert source.calls == 2 and app.refreshes == 2
        assert sum(isinstance(m, SnapshotReady) for m in seen) == 2


async def test_timer_rearms_after_each_gather_without_overlap() -> None:
    active, most = 0, 0
    lock = threading.Lock()
    base = snapshot("healthy_host")

    def slow() -> NodeSnapshot:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return base

    app = KrnetApp(slow, 0.01, "t")
    async with app.run_test(size=SIZE) as pilot:
        while app.refreshes < 4:
            await pilot.pause(0.02)
        await pilot.press("r", "r", "r")  # refresh requests while a gather runs are folded
        while app.refreshes < 6:
            await pilot.pause(0.02)
    assert most == 1


async def test_data_landing_during_teardown_waits_instead_of_raising() -> None:
    # CI once failed here: a gather finished while the screen was being torn down, and the
    # lookup of the visible tab raised NoMatches inside the message loop.
    app = make_app("healthy_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await app.query_one(TabbedContent).remove()
        fresh = dataclasses.replace(app.data)
        app.post_message(SnapshotReady(fresh))
        await pilot.pause()
        assert app.refreshes == 2 and app.data is fresh  # taken, drawn on nothing, no error


async def test_gather_failure_is_shown_and_retried() -> None:
    calls = 0
    base = snapshot("healthy_host")

    def flaky() -> NodeSnapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KrnetError("cannot reach the host at 192.0.2.1:8470 (timed out)")
        return base

    seen: list[Message] = []
    app = KrnetApp(flaky, 3600, "remote 192.0.2.1:8470")
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await ready(pilot)
        assert "✖ cannot reach the host at 192.0.2.1:8470" in app.sub_title
        assert any(isinstance(m, GatherFailed) for m in seen)
        await pilot.press("r")
        await ready(pilot)
        assert app.data is not None and "01:02:03Z" in app.sub_title


async def test_full_pool_of_255_runners() -> None:
    app = make_app("host_255")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2")
        assert table(app, "runners").row_count == 255
        await pilot.press("slash", *"runner-42", "enter")
        assert column(app, "runners", "ID") == ["42"]
        await pilot.press("escape", "s", "s", "s")
        assert column(app, "runners", "ID")[:2] == ["7", "42"]  # the two in trouble first
        await pilot.press("ctrl+end")
        assert table(app, "runners").cursor_row == 254
        await pilot.press("3")
        assert table(app, "interfaces").row_count == 255 + 3
        await pilot.press("5")
        assert "✖ MISMATCH" in column(app, "mtu", "STATE")
        await pilot.press("1")
        assert text_of(pilot, "#overview-spokes").count("\n") == 256


async def test_refresh_keeps_cursor_and_filter() -> None:
    base = snapshot("host_255")
    app = KrnetApp(Replay([base, later(base, 2, 1000)]), 3600, "t")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("2", *["down"] * 10)
        assert table(app, "runners").cursor_row == 10
        await pilot.press("r")
        await ready(pilot)
        assert table(app, "runners").cursor_row == 10
        await pilot.press("slash", *"runner-1", "enter", "r")
        await ready(pilot)
        assert set(column(app, "runners", "ID")) >= {"1", "10", "199"}
        assert "2" not in column(app, "runners", "ID")


async def test_no_color_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app("mixed_host")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.no_color
        assert "├─✖ vxkr2" in text_of(pilot, "#overview-spokes")  # health still readable


async def test_works_at_80x24() -> None:
    app = make_app("mixed_host")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for key, view_id in zip("1234567", VIEW_IDS, strict=True):
            await pilot.press(key)
            assert app.active_view == view_id
            assert app.query_one(f"#{view_id}-view").region.height > 10


async def test_views_redraw_lazily_but_never_show_stale_data() -> None:
    base = snapshot("healthy_host")
    app = KrnetApp(Replay([base, dataclasses.replace(base, events=base.events[:1])]), 3600, "t")
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("r")
        await ready(pilot)
        await pilot.press("7")
        assert table(app, "events").row_count == 1
