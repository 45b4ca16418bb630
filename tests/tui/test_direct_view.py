"""The Runners view in direct mode: the summary says the mode, the detail each runner's paths."""

from __future__ import annotations

import dataclasses

from krnet.tui.model import ViewData
from krnet.tui.runners import runner_detail, runner_summary
from tests.tui.support import snapshot
from tests.unit.test_direct_paths import pair


def direct_data(reported: bool) -> ViewData:
    base = snapshot("healthy_host")
    first, *rest = base.runners
    peers = [pair(9, "192.0.2.99", "hub"), pair(8, "192.0.2.98", "direct")] if reported else []
    runners = (dataclasses.replace(first, observed={**first.observed, "direct_peers": peers}),)
    settings = dataclasses.replace(base.settings, overlay_mode="direct")
    return ViewData.of(dataclasses.replace(base, settings=settings, runners=(*runners, *rest)))


def test_the_detail_pane_shows_each_pairs_path_and_the_summary_the_mode() -> None:
    data = direct_data(reported=True)
    key = str(data.snapshot.runners[0].runner_id)
    detail = runner_detail(data, key).plain
    assert "direct paths: 9 hub (" in detail and " 8 direct (" in detail
    assert runner_summary(data).plain.endswith("· direct mode")
    assert "direct paths: none reported yet" in runner_detail(direct_data(False), key).plain


def test_hub_mode_shows_no_paths() -> None:
    data = ViewData.of(snapshot("healthy_host"))
    key = str(data.snapshot.runners[0].runner_id)
    assert "direct paths" not in runner_detail(data, key).plain
    assert "direct mode" not in runner_summary(data).plain
