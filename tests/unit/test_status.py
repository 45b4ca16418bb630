"""`krnet node overlay`: the docs/design.md object, the mismatches, the table, and the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from krnet.cli import main
from krnet.core.model.records import ACTIVE, INACTIVE, UNREPORTED, JoinRequest, RunnerRecord
from krnet.core.model.settings import Settings
from krnet.core.observe.status import overlay_status, render_overlay_table
from krnet.core.record.reader import database_path
from krnet.core.record.store import Store

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=timezone.utc)
HOST = Settings()


def runner(runner_id: int = 1, **changes: Any) -> RunnerRecord:
    record = RunnerRecord(
        runner_id=runner_id,
        identity_hash=None,
        hostname=f"runner-{runner_id}",
        physical_ip=f"192.0.2.{runner_id}",
        vni=100 + runner_id,
        subnet=f"10.{runner_id}.0.0/16",
        status=ACTIVE,
        first_seen=T0,
        last_seen=T0,
        vxlan_id=100,
        vxlan_port=4789,
        mtu=1450,
    )
    return replace(record, **changes)


def status_of(
    *runners: RunnerRecord,
    settings: Settings = HOST,
    now: datetime = T0 + timedelta(seconds=10),
    **extra: Any,
) -> dict[str, Any]:
    return overlay_status(
        mode=settings.mode,
        settings=settings,
        runners=runners,
        now=now,
        runner_timeout=30.0,
        **extra,
    )


def test_host_status_with_defaults_is_exactly_the_design_object() -> None:
    assert status_of(runner(1)) == {
        "mode": "host",
        "host_overlay_ip": "10.0.0.1/8",
        "vxlan_id_base": 100,
        "vxlan_port": 4789,
        "mtu": 1450,
        "max_runners": 255,
        "total": 1,
        "active": 1,
        "inactive": 0,
        "available_ids": 254,
        "overlay_mode": "hub",
        "runners": [
            {
                "runner_id": 1,
                "hostname": "runner-1",
                "physical_ip": "192.0.2.1",
                "vni": 101,
                "subnet": "10.1.0.0/16",
                "gateway": "10.1.0.1",
                "host_ip": "10.1.0.254",
                "interface": "vxkr1",
                "status": "active",
                "last_seen": "2026-11-28T01:02:03Z",
                "mismatches": [],
                "network": None,
                "probe": None,
            }
        ],
    }


def test_counts_order_and_decimal_tunnel_names() -> None:
    status = status_of(runner(10), runner(2, status=INACTIVE), runner(1))
    assert [r["runner_id"] for r in status["runners"]] == [1, 2, 10]
    assert [r["interface"] for r in status["runners"]] == ["vxkr1", "vxkr2", "vxkr10"]
    assert (status["total"], status["active"], status["inactive"]) == (3, 2, 1)
    assert status["available_ids"] == 252
    json.dumps(status)


def test_a_runner_silent_past_the_timeout_shows_inactive_though_recorded_active() -> None:
    status = status_of(runner(1), now=T0 + timedelta(seconds=31))
    assert status["runners"][0]["status"] == "inactive"
    assert (status["active"], status["inactive"]) == (0, 1)


def test_runner_mode_lists_its_own_allocation_on_vxlan0() -> None:
    settings = Settings(mode="runner")
    status = status_of(runner(3), settings=settings)
    assert status["mode"] == "runner"
    (own,) = status["runners"]
    assert (own["interface"], own["gateway"], own["host_ip"]) == (
        "vxlan0",
        "10.3.0.1",
        "10.3.0.254",
    )
    assert own["mismatches"] == []


def test_custom_scheme_addresses_come_from_the_plan() -> None:
    settings = Settings(overlay_host_ip="172.16.0.1", overlay_host_prefix=12)
    status = status_of(runner(1, subnet="172.17.0.0/16"), settings=settings)
    assert status["host_overlay_ip"] == "172.16.0.1/12"
    assert status["max_runners"] == 15
    entry = status["runners"][0]
    assert (entry["subnet"], entry["gateway"], entry["host_ip"]) == (
        "172.17.0.0/16",
        "172.17.0.1",
        "172.17.0.254",
    )
    assert entry["mismatches"] == []


def test_reported_settings_that_differ_from_the_host_are_mismatches() -> None:
    status = status_of(runner(1, mtu=1400, vxlan_port=8472, vxlan_id=200))
    assert status["runners"][0]["mismatches"] == [
        "vxlan_id: runner 200, host 100",
        "vxlan_port: runner 8472, host 4789",
        "mtu: runner 1400, host 1450",
    ]


def test_observed_link_state_that_differs_from_the_plan_is_a_mismatch() -> None:
    observed = {
        "tunnel_present": True,
        "tunnel_up": False,
        "vni": 101,
        "port": 4789,
        "mtu": 1400,
        "local": "192.0.2.99",
        "bridge_mtu": 1500,
        "remote": "192.0.2.254",
    }
    (entry,) = status_of(runner(1, observed=observed))["runners"]
    assert entry["mismatches"] == [
        "runner's vxlan0 is down",
        "mtu: runner's vxlan0 has 1400, expected 1450",
        "local: runner's vxlan0 has 192.0.2.99, expected 192.0.2.1",
        "bridge_mtu: runner's kohaku-overlay has 1500, expected 1450",
    ]


def test_observed_link_state_that_matches_is_no_mismatch() -> None:
    observed = {"tunnel_present": True, "tunnel_up": True, "vni": 101, "port": 4789, "mtu": 1450}
    assert status_of(runner(1, observed=observed))["runners"][0]["mismatches"] == []


def test_a_missing_tunnel_or_an_unreadable_runner_is_said_plainly() -> None:
    missing = runner(1, observed={"tunnel_present": False, "vni": None})
    broken = runner(2, observed={"error": "netlink: permission denied"})
    entries = status_of(missing, broken)["runners"]
    assert [entry["mismatches"] for entry in entries] == [
        ["runner's vxlan0 is missing"],
        ["the runner could not read its links: netlink: permission denied"],
    ]


def test_record_that_disagrees_with_the_plan_is_a_mismatch() -> None:
    (entry,) = status_of(runner(2, vni=150, subnet="10.9.0.0/16"))["runners"]
    assert entry["mismatches"] == [
        "vni: record 150, plan 102",
        "subnet: record 10.9.0.0/16, plan 10.2.0.0/16",
    ]


def test_an_adopted_record_without_reported_settings_has_no_mismatch() -> None:
    adopted = runner(4, hostname="unknown-4", vxlan_port=UNREPORTED, mtu=UNREPORTED)
    assert status_of(adopted)["runners"][0]["mismatches"] == []


def test_extra_keys_merge_and_extra_mismatches_join_the_computed_ones() -> None:
    extra = {1: {"probe": {"loss": 0.0}, "mismatches": ["mtu: runner 1400, host 1450", "x"]}}
    (entry,) = status_of(runner(1, mtu=1400), extra=extra)["runners"]
    assert entry["probe"] == {"loss": 0.0}
    assert entry["mismatches"] == ["mtu: runner 1400, host 1450", "x"]


def test_interface_for_overrides_the_name() -> None:
    (entry,) = status_of(runner(1), interface_for=lambda r: f"tun{r.runner_id}")["runners"]
    assert entry["interface"] == "tun1"


def test_table_shows_totals_rows_and_mismatches() -> None:
    status = status_of(runner(1), runner(12, status=INACTIVE, mtu=1400))
    text = render_overlay_table(status, bridge="kohaku-host")
    lines = text.splitlines()
    assert lines[:6] == [
        "Overlay network (host)",
        "  Host IP:        10.0.0.1/8",
        "  Bridge:         kohaku-host",
        "  VXLAN:          id base 100, port 4789, MTU 1450",
        "  Allocations:    2 (1 active, 1 inactive)",
        "  Available IDs:  253/255",
    ]
    header = lines[7].split()
    assert header[:3] == ["ID", "RUNNER", "PHYSICAL"]
    assert lines[8].split() == [
        "1",
        "runner-1",
        "192.0.2.1",
        "101",
        "10.1.0.0/16",
        "10.1.0.1",
        "10.1.0.254",
        "vxkr1",
        "active",
        "-",
        "2026-11-28T01:02:03Z",
    ]
    assert lines[9].split()[7:9] == ["vxkr12", "inactive"]
    assert lines[-2:] == ["Mismatches:", "  runner 12 (runner-12): mtu: runner 1400, host 1450"]


def test_table_without_runners_says_so() -> None:
    assert render_overlay_table(status_of()).endswith("\nNo runner allocations.\n")


# --- `krnet node overlay` through the command line ------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """No real config: HOME in tmp, no KRNET_* or XDG variables."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in list(os.environ):
        if name.startswith(("KRNET_", "XDG_")):
            monkeypatch.delenv(name)
    return dict(os.environ)


def populate(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        now = datetime.now(timezone.utc)
        earlier = now - timedelta(minutes=5)
        for name, address, seen in (
            ("runner-a", "192.0.2.10", now),
            ("runner-b", "192.0.2.11", earlier),
        ):
            request = JoinRequest(None, name, address, 100, 4789, 1450)
            store.allocate(request, plan=Settings().plan(), now=seen)
        store.mark_inactive(older_than=now)


def overlay(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str]:
    code = main(["--data-dir", str(data_dir), "node", "overlay", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def test_node_overlay_json_reads_the_record(
    clean_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(tmp_path)
    code, out = overlay(capsys, tmp_path, "--json")
    status = json.loads(out)
    assert code == 0
    assert (status["mode"], status["total"], status["active"], status["inactive"]) == (
        "host",
        2,
        1,
        1,
    )
    assert [(r["runner_id"], r["hostname"], r["status"]) for r in status["runners"]] == [
        (1, "runner-a", "active"),
        (2, "runner-b", "inactive"),
    ]
    assert status["runners"][0]["last_seen"].endswith("Z")
    code, out = overlay(capsys, tmp_path)
    assert code == 0 and "runner-a" in out and "Bridge:         kohaku-host" in out


def test_node_overlay_without_a_record_is_empty_and_creates_nothing(
    clean_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    code, out = overlay(capsys, data_dir, "--json")
    assert code == 0 and json.loads(out)["runners"] == []
    assert not data_dir.exists()


def test_node_overlay_on_a_current_record_does_not_import_sqlalchemy(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    populate(tmp_path)
    probe = (
        "import sys\nfrom krnet.cli import main\n"
        f"code = main(['--data-dir', {str(tmp_path)!r}, 'node', 'overlay', '--json'])\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'sqlmodel', 'alembic') if m in sys.modules)\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr.strip().splitlines()[-1] == "0 []"
    assert json.loads(result.stdout)["total"] == 2


def test_node_overlay_reports_a_corrupt_record_in_one_line(
    clean_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_path(tmp_path).write_bytes(b"garbage" * 1000)
    assert main(["--data-dir", str(tmp_path), "node", "overlay", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"krnet: {database_path(tmp_path)} is not a readable SQLite database")
    assert len(err.strip().splitlines()) == 1


def test_direct_mode_lists_each_runners_paths_as_it_reported_them() -> None:
    from tests.unit.test_direct_paths import pair

    pairs = [pair(2, "192.0.2.2", "hub")]
    reported = runner(1, observed={"tunnel_present": True, "direct_peers": pairs})
    status = status_of(reported, settings=replace(HOST, overlay_mode="direct"))
    assert status["overlay_mode"] == "direct"
    [entry] = status["runners"]
    assert entry["direct_peers"] == [
        {
            "runner_id": 2,
            "physical_ip": "192.0.2.2",
            "path": "hub",
            "since": "2026-01-01T00:00:05Z",
            "last_probe": "2026-01-01T00:00:09Z",
            "last_probe_ok": False,
        }
    ]
    text = render_overlay_table(status)
    assert "Overlay mode:   direct" in text
    assert "runner 1 -> 2 (192.0.2.2): hub since 2026-01-01T00:00:05Z" in text
    assert "direct_peers" not in status_of(reported)["runners"][0]  # hub mode: unchanged
