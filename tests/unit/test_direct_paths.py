"""doctor's direct_paths check: a pair on the hub is a warning naming the pair, once."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from krnet.core.model.peers import PathKind, PeerPath
from krnet.core.model.report import pair_to_wire
from krnet.core.model.snapshot_json import load_file
from krnet.core.observe.diagnose.check import PASS, WARN, Context
from krnet.core.observe.diagnose.direct import check_direct_paths
from tests.unit.test_diagnose import FIXTURES


def pair(runner_id: int, physical_ip: str, path: PathKind) -> list[object]:
    """One pair as a runner's report carries it (its own record's form, with the last probe)."""
    direct = path == "direct"
    since, probed = (
        datetime(2026, 1, 1, 0, 0, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 0, 0, 9, tzinfo=timezone.utc),
    )
    found = PeerPath(
        runner_id, physical_ip, path, since, probed, direct, 0 if direct else 3, 2 if direct else 0
    )
    return pair_to_wire(found, detail=True)


def host_context(mode: str, reports: dict[int, list[list[object]]]) -> Context:
    snapshot = load_file(FIXTURES / "healthy_host.json")
    runners = tuple(
        dataclasses.replace(
            runner, observed={**runner.observed, "direct_peers": reports[runner.runner_id]}
        )
        for runner in snapshot.runners
        if runner.runner_id in reports
    )
    settings = dataclasses.replace(snapshot.settings, overlay_mode=mode)
    return Context(dataclasses.replace(snapshot, settings=settings, runners=runners))


def two_runners() -> tuple[int, int]:
    one, two, *_ = [r.runner_id for r in load_file(FIXTURES / "healthy_host.json").runners]
    return one, two


def test_a_pair_on_the_hub_is_one_warning_naming_both_runners() -> None:
    one, two = two_runners()
    ctx = host_context(
        "direct",
        {one: [pair(two, "192.0.2.99", "hub")], two: [pair(one, "192.0.2.98", "hub")]},
    )
    [check] = check_direct_paths(ctx)
    assert check.status == WARN and check.runner_id == one
    assert f"runners {one} (" in check.detail and f"and {two} (192.0.2.99)" in check.detail
    assert "through the hub since 2026-01-01T00:00:05Z" in check.detail
    assert "UDP port 4789" in check.fix and "192.0.2.99" in check.fix


def test_direct_pairs_pass_and_hub_mode_has_no_such_check() -> None:
    one, two = two_runners()
    reports = {one: [pair(two, "192.0.2.99", "direct")], two: [pair(one, "192.0.2.98", "direct")]}
    [check] = check_direct_paths(host_context("direct", reports))
    assert (check.status, check.detail) == (PASS, "all 1 reported pairs of runners direct")
    assert check_direct_paths(host_context("hub", {one: [], two: []})) == []
    # a runner's own settings need not say direct: its report does
    assert check_direct_paths(host_context("hub", reports))[0].status == PASS
