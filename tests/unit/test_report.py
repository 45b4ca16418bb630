"""The runner's report: its three wire shapes, read back typed, and what a record makes of it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from krnet.core.model.report import RunnerReport
from tests.unit.test_status import runner

LINKS = RunnerReport(
    tunnel_present=True,
    vni=101,
    remote="192.0.2.1",
    local="192.0.2.11",
    port=4789,
    mtu=1450,
    bridge_mtu=1450,
    bridge_addresses=("10.1.0.1/16",),
    tunnel_up=True,
    docker_available=True,
    docker_error=None,
    network="kohakuriver-overlay",
)


def test_a_runner_with_its_overlay_sends_every_link_key_in_order() -> None:
    assert list(LINKS.to_wire().items()) == [
        ("tunnel_present", True),
        ("vni", 101),
        ("remote", "192.0.2.1"),
        ("local", "192.0.2.11"),
        ("port", 4789),
        ("mtu", 1450),
        ("bridge_mtu", 1450),
        ("bridge_addresses", ["10.1.0.1/16"]),
        ("tunnel_up", True),
        ("docker_available", True),
        ("docker_error", None),
        ("network", "kohakuriver-overlay"),
    ]


def test_a_missing_tunnel_still_sends_every_key() -> None:
    missing = RunnerReport(tunnel_present=False, tunnel_up=False, docker_available=False)
    wire = missing.to_wire()
    assert set(wire) == set(LINKS.to_wire())
    assert (wire["vni"], wire["bridge_addresses"]) == (None, [])


def test_an_unreadable_runner_sends_its_error_alone_and_no_data_plane_sends_nothing() -> None:
    assert RunnerReport.failed("netlink: permission denied").to_wire() == {
        "error": "netlink: permission denied"
    }
    assert RunnerReport().to_wire() == {}
    assert RunnerReport().empty and not RunnerReport.failed("x").empty


def test_each_shape_reads_back_as_it_was_built() -> None:
    for report in (LINKS, RunnerReport.failed("no netlink"), RunnerReport()):
        assert RunnerReport.from_wire(report.to_wire()) == report


def test_a_stored_report_ignores_the_hosts_applied_and_values_of_the_wrong_type() -> None:
    stored = {**LINKS.to_wire(), "applied": {"runner_id": 1}, "vni": "101", "mtu": True}
    report = RunnerReport.from_wire(stored)
    assert (report.vni, report.mtu, report.port) == (None, None, 4789)


json_values = st.none() | st.booleans() | st.integers() | st.text(max_size=5)


@given(st.dictionaries(st.text(max_size=12), json_values | st.lists(json_values), max_size=6))
def test_any_observed_object_reads_without_raising(observed: dict[str, object]) -> None:
    RunnerReport.from_wire(observed)


def test_a_record_reads_its_stored_observed_typed() -> None:
    record = runner(1, observed={**LINKS.to_wire(), "applied": None})
    assert record.report == LINKS
