"""A runner judged by the allocation it holds, its network choice, and the fallback subnet check.

Pure: recorded snapshots and settings values; the real kernel, Docker and host are in
tests/lab/test_runner_view.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from krnet.cli import main
from krnet.config.checks import warnings
from krnet.core.model.runner_state import HeldAllocation, RunnerState
from krnet.core.model.settings import Settings, fallback_subnet_overlaps
from krnet.core.model.snapshot_json import dumps, load_file, loads
from krnet.core.observe.diagnose.engine import FAIL, PASS, WARN, diagnose
from krnet.core.observe.status import overlay_status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CUSTOM = Settings(
    mode="host", overlay_enabled=True, overlay_host_ip="172.16.0.1", overlay_host_prefix=12
)


# -- item 2: the fallback subnet overlaps neither the overlay nor the underlay -------------


def test_the_default_fallback_subnet_inside_the_custom_scheme_is_flagged() -> None:
    # Regression (issue 12, item 2): on ccbb48d neither config show nor doctor said anything.
    [problem] = fallback_subnet_overlaps(CUSTOM)
    assert "172.30.0.0/16" in problem and "172.16.0.0/12" in problem
    [warning] = warnings(CUSTOM, {"docker_network_subnet": "default"})
    assert "from default" in warning and "docker_network_subnet =" in warning


def test_the_defaults_and_a_moved_fallback_pass() -> None:
    assert fallback_subnet_overlaps(Settings()) == []
    moved = dataclasses.replace(
        CUSTOM, docker_network_subnet="192.168.240.0/24", docker_network_gateway="192.168.240.1"
    )
    assert fallback_subnet_overlaps(moved) == []


def test_an_underlay_network_holding_the_fallback_is_flagged() -> None:
    [problem] = fallback_subnet_overlaps(Settings(), [IPv4Network("172.30.4.0/24")])
    assert "underlay network 172.30.4.0/24" in problem


def test_config_show_warns_on_stderr_and_in_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("KRNET_"):
            monkeypatch.delenv(name)
    config = tmp_path / "krnet.toml"
    config.write_text('overlay_host_ip = "172.16.0.1"\noverlay_host_prefix = 12\n')
    argv = ["--config", str(config), "--data-dir", str(tmp_path / "data"), "config", "show"]
    assert main(argv) == 0
    assert "warning: docker_network_subnet 172.30.0.0/16 lies in the overlay network" in (
        capsys.readouterr().err
    )
    assert main([*argv, "--json"]) == 0
    [warning] = json.loads(capsys.readouterr().out)["warnings"]
    assert "172.16.0.0/12" in warning


def test_doctor_flags_the_fallback_subnet_in_the_underlay() -> None:
    snap = load_file(FIXTURES / "healthy_runner.json")
    underlay = snap.underlay_link
    assert underlay is not None
    link = dataclasses.replace(snap.links[underlay], addresses=("172.30.9.2/24",))
    checks = diagnose(dataclasses.replace(snap, links={**snap.links, underlay: link}))
    [check] = [check for check in checks if check.check == "docker_subnet"]
    assert check.status == WARN and "172.30.9.0/24" in check.detail


# -- items 1 and 4: judged by the allocation held; the network containers use ---------------


def held(runner_id: int = 3) -> HeldAllocation:
    """Runner 3's allocation under the custom scheme 172.16.0.1/12."""
    block = 16 + runner_id
    fields = (
        f'{{"runner_id": {runner_id}, "vni": {100 + runner_id}, "subnet": "172.{block}.0.0/16", '
        f'"gateway": "172.{block}.0.1", "host_ip_on_subnet": "172.{block}.0.254", '
        '"host_overlay_ip": "172.16.0.1", "host_physical_ip": "192.0.2.1", "mtu": 1450, '
        '"overlay_cidr": "172.16.0.0/12", "bridge_name": "kohaku-overlay", "vxlan_port": 4789, '
        '"vxlan_id": 100}'
    )
    return HeldAllocation(**json.loads(fields))


def state(**changes: object) -> RunnerState:
    fields: dict[str, object] = {
        "updated_at": NOW,
        "allocation": held(),
        "network": "kohakuriver-overlay",
        **changes,
    }
    return RunnerState(**fields)  # type: ignore[arg-type]


RUNNER = Settings(mode="runner", overlay_enabled=True, host_address="192.0.2.1")


def status_of(runner_state: RunnerState | None, settings: Settings = RUNNER) -> dict[str, object]:
    return overlay_status(
        mode="runner",
        settings=settings,
        runners=[],
        now=NOW,
        runner_timeout=30.0,
        runner_state=runner_state,
    )


def test_a_runner_reports_the_hosts_scheme_and_its_overlay_network() -> None:
    # Regression (issue 12, items 1 and 4): on ccbb48d this said 10.0.0.1/8 and had no network.
    status = status_of(state())
    assert status["host_overlay_ip"] == "172.16.0.1/12"
    assert (status["network"], status["gateway"], status["network_reason"]) == (
        "kohakuriver-overlay",
        "172.19.0.1",
        None,
    )


@pytest.mark.parametrize(
    ("runner_state", "settings", "reason"),
    [
        (None, dataclasses.replace(RUNNER, overlay_enabled=False), "overlay_enabled is false"),
        (None, RUNNER, "not joined"),
        (
            state(allocation=None, network="kohakuriver-net", network_reason="host unreachable"),
            RUNNER,
            "host unreachable",
        ),
        (
            state(network="kohakuriver-net", network_reason="the overlay set-up failed: x"),
            RUNNER,
            "set-up failed",
        ),
    ],
)
def test_every_fallback_names_kohakuriver_net_and_why(
    runner_state: RunnerState | None, settings: Settings, reason: str
) -> None:
    status = status_of(runner_state, settings)
    assert (status["network"], status["gateway"]) == ("kohakuriver-net", "172.30.0.1")
    assert reason in str(status["network_reason"])


def test_local_scheme_keys_that_differ_are_one_warning_naming_both() -> None:
    snap = load_file(FIXTURES / "healthy_runner.json")
    local = dataclasses.replace(snap.settings, overlay_host_ip="10.9.0.1")
    checks = diagnose(dataclasses.replace(snap, local_settings=local, runner_state=state()))
    problems = [check for check in checks if check.status != PASS]
    assert [(check.check, check.status) for check in problems] == [("allocation_scheme", WARN)]
    assert "10.9.0.1" in problems[0].detail and "10.0.0.1" in problems[0].detail


def test_a_published_setup_failure_fails_doctor_with_its_message() -> None:
    snap = load_file(FIXTURES / "healthy_runner.json")
    failed = state(setup_error="vxlan0: VNI 103 is held by vx-old: ip link del vx-old")
    [check] = [
        c
        for c in diagnose(dataclasses.replace(snap, runner_state=failed))
        if c.check == "overlay_setup"
    ]
    assert check.status == FAIL and "ip link del vx-old" in check.detail


def test_the_runner_state_travels_in_the_snapshot_json() -> None:
    snap = dataclasses.replace(load_file(FIXTURES / "healthy_runner.json"), runner_state=state())
    assert loads(dumps(snap)) == snap
