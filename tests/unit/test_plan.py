"""The address plan against the reference's "IP Address Allocation" tables, and its invariants."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from krnet.core.model.plan import (
    IFNAME_MAX,
    MAX_RUNNERS,
    MAX_VNI,
    OverlayPlan,
    PlanError,
    runner_id_from_tunnel,
    tunnel_name,
)
from krnet.core.protocol.messages import Allocation

DEFAULT = OverlayPlan.build("10.0.0.1", 8, 16, 100)


@pytest.mark.parametrize("runner_id", range(1, 256))
def test_defaults_reproduce_the_reference_table(runner_id: int) -> None:
    runner = DEFAULT.runner(runner_id)
    assert runner.subnet == IPv4Network(f"10.{runner_id}.0.0/16")
    assert runner.gateway == IPv4Address(f"10.{runner_id}.0.1")
    assert runner.host_ip_on_subnet == IPv4Address(f"10.{runner_id}.0.254")
    assert runner.first_container == IPv4Address(f"10.{runner_id}.0.2")
    assert runner.last_container == IPv4Address(f"10.{runner_id}.255.254")
    assert runner.vni == 100 + runner_id
    assert runner.host_interface == f"vxkr{runner_id}"


def test_reference_figures() -> None:
    assert str(DEFAULT.host_interface) == "10.0.0.1/8"
    assert DEFAULT.max_runners == 255
    runner = DEFAULT.runner(1)
    # 65,532 container addresses: the range from first to last container, less the host's
    assert runner.first_container <= runner.host_ip_on_subnet <= runner.last_container
    assert int(runner.last_container) - int(runner.first_container) == 65_532
    assert str(runner.host_interface_address) == "10.1.0.254/16"


def test_reference_custom_scheme_works_without_code_changes() -> None:
    plan = OverlayPlan.build("172.16.0.1", 12, 16, 100)
    assert plan.network == IPv4Network("172.16.0.0/12")
    assert plan.max_runners == 15
    assert plan.runner(1).subnet == IPv4Network("172.17.0.0/16")
    assert plan.runner(15).subnet == IPv4Network("172.31.0.0/16")
    wide = OverlayPlan.build("172.16.0.1", 12, 20, 100)
    assert wide.max_runners == 255
    assert wide.runner(255).subnet.subnet_of(wide.network)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("10.0.0.1", 8, 8, 100), "overlay_runner_prefix"),
        (("10.0.0.1", 8, 25, 100), "overlay_runner_prefix"),
        (("10.0.0.1", 0, 16, 100), "overlay_host_prefix"),
        (("10.1.0.1", 8, 16, 100), "block 0"),
        (("10.0.0.1", 8, 16, MAX_VNI - 10), "24-bit"),
        (("not-an-ip", 8, 16, 100), "not an IPv4"),
    ],
)
def test_impossible_plans_are_refused(args: tuple, fragment: str) -> None:
    with pytest.raises(PlanError, match=fragment):
        OverlayPlan.build(*args)


def test_runner_ids_outside_the_pool_are_refused() -> None:
    for bad in (0, 256):
        with pytest.raises(PlanError):
            DEFAULT.runner(bad)


def test_a_20_bit_runner_prefix_gives_4095_runners_end_to_end() -> None:
    plan = OverlayPlan.build("10.0.0.1", 8, 20, 100)
    assert plan.max_runners == MAX_RUNNERS == 4095
    subnets = [plan.runner(i).subnet for i in range(1, 4096)]
    assert subnets[0] == IPv4Network("10.0.16.0/20")
    assert subnets[-1] == IPv4Network("10.255.240.0/20")
    assert len(set(subnets)) == 4095
    last = plan.runner(4095)
    assert (last.vni, last.host_interface) == (4195, "vxkr4095")
    assert str(last.host_interface_address) == "10.255.240.254/20"
    assert runner_id_from_tunnel(last.host_interface) == 4095
    with pytest.raises(PlanError, match=r"1\.\.4095"):
        plan.runner(4096)


def test_narrower_blocks_are_capped_at_4095_runners() -> None:
    assert OverlayPlan.build("10.0.0.1", 8, 24, 100).max_runners == MAX_RUNNERS


def test_tunnel_names_round_trip_and_reject_foreign_links() -> None:
    assert tunnel_name(10) == "vxkr10"
    assert runner_id_from_tunnel("vxkr10") == 10
    assert runner_id_from_tunnel("vxkr4095") == 4095
    for foreign in ("vxkr", "vxkr0", "vxkr4096", "vxkr01", "vxlan0", "eth0", "vxkrx"):
        assert runner_id_from_tunnel(foreign) is None


plans = st.builds(
    lambda host_prefix, extra, base: (host_prefix, min(24, host_prefix + extra), base),
    st.integers(min_value=8, max_value=22),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=0, max_value=MAX_VNI - MAX_RUNNERS),
).filter(lambda p: p[1] > p[0])


@given(plans)
def test_subnets_never_overlap_and_stay_inside_the_overlay(params: tuple[int, int, int]) -> None:
    host_prefix, runner_prefix, base = params
    plan = OverlayPlan.build("10.0.0.1", host_prefix, runner_prefix, base)
    # the first and last 32 ids: blocks are linear in the id, so the ends bound the rest
    last = plan.max_runners
    ids = sorted({*range(1, min(32, last) + 1), *range(max(1, last - 31), last + 1)})
    subnets = [plan.runner(i).subnet for i in ids]
    assert len(set(subnets)) == len(subnets)
    for i, subnet in zip(ids, subnets, strict=True):
        assert subnet.subnet_of(plan.network)
        assert not subnet.overlaps(plan.host_block)
        assert plan.host_ip not in subnet
        runner = plan.runner(i)
        assert runner.gateway in subnet and runner.host_ip_on_subnet in subnet
        assert len(runner.host_interface) <= IFNAME_MAX
        assert 0 <= runner.vni <= MAX_VNI
    ordered = sorted(subnets)
    assert all(not a.overlaps(b) for a, b in itertools.pairwise(ordered))


def test_the_protocol_carries_runner_ids_up_to_4095() -> None:
    last = OverlayPlan.build("10.0.0.1", 8, 20, 100).runner(4095)
    fields = {
        "vni": last.vni,
        "subnet": str(last.subnet),
        "gateway": str(last.gateway),
        "host_overlay_ip": "10.0.0.1",
        "host_ip_on_subnet": str(last.host_ip_on_subnet),
        "mtu": 1450,
        "host_physical_ip": "192.0.2.1",
        "runner_physical_ip": "192.0.2.2",
        "vxlan_id": 100,
        "overlay_cidr": "10.0.0.0/8",
        "bridge_name": "kohaku-overlay",
        "vxlan_port": 4789,
        "heartbeat_interval": 5.0,
    }
    assert Allocation.model_validate(fields | {"runner_id": 4095}).runner_id == 4095
    with pytest.raises(ValidationError, match="runner_id"):
        Allocation.model_validate(fields | {"runner_id": 4096})
