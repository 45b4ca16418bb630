"""`/metrics`, `/healthz`, `/readyz` and `metrics_bind`: names, labels and values from recorded
snapshots, parsed with prometheus_client's own text parser; the listener on loopback."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from krnet.config import load_settings
from krnet.core.control.counters import Counters, change_kind
from krnet.core.control.metrics import NodeView
from krnet.core.control.metrics_server import MetricsServer, registry_for
from krnet.core.dataplane.probe import ProbeOutcome, ProbeTarget
from krnet.core.model.settings import LoadedSettings
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import load_file
from krnet.errors import ConfigError
from tests.support import http_get as get

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "snapshots"
DASHBOARD = ROOT / "docs" / "grafana-krnet.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# the only labels a krnet metric may carry: each bounded by the runners, a code list or a kind list
BOUNDED_LABELS = {"runner_id", "status", "code", "kind", "network", "part", "vni", "subnet"}


def snapshot(name: str) -> NodeSnapshot:
    return load_file(FIXTURES / f"{name}.json")


def answered(targets: list[ProbeTarget], _mtu: int, _timeout: float) -> list[ProbeOutcome]:
    """A runner's probe round to the host, every echo answered (no packet leaves the test)."""
    return [ProbeOutcome(target.runner_id, 0.4, 0.3) for target in targets]


def view_of(snap: NodeSnapshot, data_dir: Path) -> NodeView:
    loaded = LoadedSettings(settings=snap.settings, data_dir=data_dir)
    return NodeView(loaded, gather=lambda _loaded: snap, prober=answered)


def scrape(snap: NodeSnapshot, data_dir: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the exposition, by sample name, as Prometheus would read it."""
    text = generate_latest(registry_for(view_of(snap, data_dir))).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    matching = [v for got, v in samples[name] if all(got.get(k) == w for k, w in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_host_exposition_counts_runners_tunnels_and_probes(tmp_path: Path) -> None:
    samples = scrape(snapshot("healthy_host"), tmp_path)
    assert value(samples, "krnet_runners", status="active") == 3
    assert value(samples, "krnet_runners", status="inactive") == 0
    assert value(samples, "krnet_runner_ids_available") == 252
    for rid in ("1", "2", "3"):
        assert value(samples, "krnet_tunnel_up", runner_id=rid) == 1
        assert value(samples, "krnet_probe_loss_ratio", runner_id=rid) == 0
    assert value(samples, "krnet_probe_rtt_seconds", runner_id="1") == pytest.approx(0.00026)
    assert value(samples, "krnet_ready") == 1
    assert value(samples, "krnet_guard_dropped_packets_total") >= 0
    assert "krnet_joins_total" in samples and "krnet_reconcile_changes_total" in samples


def test_a_missing_tunnel_shows_in_the_gauge_and_in_readiness(tmp_path: Path) -> None:
    healthy = snapshot("healthy_host")
    links = {name: link for name, link in healthy.links.items() if name != "vxkr2"}
    broken = dataclasses.replace(healthy, links=links)
    samples = scrape(broken, tmp_path)
    assert value(samples, "krnet_tunnel_up", runner_id="2") == 0
    assert value(samples, "krnet_ready") == 0
    missing = view_of(broken, tmp_path).not_ready()
    assert missing is not None and "vxkr2" in missing and "missing" in missing
    assert "\n" not in missing


def test_runner_exposition_names_its_allocation_bridge_and_networks(tmp_path: Path) -> None:
    samples = scrape(snapshot("healthy_runner"), tmp_path)
    assert value(samples, "krnet_allocation_info", runner_id="1", vni="101") == 1
    assert value(samples, "krnet_tunnel_up", runner_id="1") == 1
    assert value(samples, "krnet_bridge_present") == 1
    assert value(samples, "krnet_docker_network_present", network="kohakuriver-overlay") == 1
    assert value(samples, "krnet_docker_network_present", network="kohakuriver-net") == 1
    assert value(samples, "krnet_probe_rtt_seconds", runner_id="1") == pytest.approx(0.0004)
    assert value(samples, "krnet_probe_loss_ratio", runner_id="1") == 0
    assert "krnet_runners" not in samples  # the host's view only


@pytest.mark.parametrize("name", ["healthy_host", "healthy_runner", "host_255"])
def test_names_follow_prometheus_conventions_and_are_documented(tmp_path: Path, name: str) -> None:
    text = generate_latest(registry_for(view_of(snapshot(name), tmp_path))).decode()
    documented = OPERATIONS.read_text(encoding="utf-8")
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("krnet_"):
            assert family.name.startswith("process_"), family.name
            continue
        assert re.fullmatch(r"krnet_[a-z_]+", family.name), family.name
        exposed = family.name + ("_total" if family.type == "counter" else "")
        exposed += "_info" if family.type == "info" else ""
        assert f"`{exposed}`" in documented, f"{exposed} is not in docs/operations.md"
        for sample in family.samples:
            assert set(sample.labels) <= BOUNDED_LABELS, (sample.name, sample.labels)
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name


def test_255_runners_give_one_series_per_runner_and_no_more(tmp_path: Path) -> None:
    snap = snapshot("host_255")
    samples = scrape(snap, tmp_path)
    assert len(samples["krnet_tunnel_up"]) == len(snap.runners)
    assert len(samples["krnet_runner_last_seen_age_seconds"]) == len(snap.runners)


def test_the_snapshot_is_gathered_at_most_once_per_max_age(tmp_path: Path) -> None:
    snap = snapshot("healthy_host")
    calls: list[int] = []

    def gather(_loaded: LoadedSettings) -> NodeSnapshot:
        calls.append(1)
        return snap

    view = NodeView(LoadedSettings(settings=snap.settings, data_dir=tmp_path), gather=gather)
    for _ in range(5):
        view.snapshot()
    assert len(calls) == 1
    view.max_age = 0.0
    view.snapshot()
    assert len(calls) == 2


def test_counters_keep_bounded_kinds() -> None:
    counters = Counters()
    for change in (
        "vxkr1: created (VNI 101, 192.0.2.1 -> 192.0.2.11, port 4789)",
        "vxkr1: address 10.1.0.254/16 added",
        "10.0.0.0/8 via 10.1.0.254: added",
        "filter FORWARD: inserted jump '-j KRNET-FORWARD' at position 1",
        "created Docker network kohakuriver-overlay (10.1.0.0/16)",
        "sysctl net.ipv4.ip_forward: 0 -> 1",
        "firewalld: vxkr1 added to the trusted zone (runtime)",
    ):
        counters.changed(change)
    counters.adopted()
    counters.refused("busy")
    assert dict(counters.copy().changes) == {
        "link": 1,
        "address": 1,
        "route": 1,
        "firewall": 1,
        "docker_network": 1,
        "sysctl": 1,
        "firewalld": 1,
        "adopted": 1,
    }
    assert change_kind("anything else: odd") == "link"
    assert counters.copy().refusals == {"busy": 1}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[MetricsServer, dict[str, NodeSnapshot]]]:
    holder = {"snap": snapshot("healthy_host")}
    settings = dataclasses.replace(holder["snap"].settings, metrics_bind="127.0.0.1:0")
    loaded = LoadedSettings(settings=settings, data_dir=tmp_path)
    view = NodeView(loaded, max_age=0.0, gather=lambda _loaded: holder["snap"])
    metrics = MetricsServer(loaded, view)
    metrics.start()
    try:
        yield metrics, holder
    finally:
        metrics.stop()


def test_the_listener_serves_metrics_health_and_readiness(
    server: tuple[MetricsServer, dict[str, NodeSnapshot]],
) -> None:
    metrics, holder = server
    assert get(metrics.port, "/healthz") == (200, "ok\n")
    assert get(metrics.port, "/readyz") == (200, "ready\n")
    status, body = get(metrics.port, "/metrics")
    assert status == 200 and 'krnet_runners{status="active"} 3.0' in body
    healthy = holder["snap"]
    holder["snap"] = dataclasses.replace(
        healthy, links={k: v for k, v in healthy.links.items() if k != "vxkr1"}
    )
    status, body = get(metrics.port, "/readyz")
    assert status == 503
    assert body.startswith("not ready: vxkr1 of runner 1") and body.count("\n") == 1
    assert get(metrics.port, "/healthz")[0] == 200
    assert get(metrics.port, "/nothing")[0] == 404


def test_a_taken_port_is_one_clear_error(
    server: tuple[MetricsServer, dict[str, NodeSnapshot]], tmp_path: Path
) -> None:
    metrics, holder = server
    settings = dataclasses.replace(
        holder["snap"].settings, metrics_bind=f"127.0.0.1:{metrics.port}"
    )
    with pytest.raises(Exception, match=r"cannot listen on metrics_bind 127\.0\.0\.1:\d+ .*free"):
        MetricsServer(LoadedSettings(settings=settings, data_dir=tmp_path))


def _load(tmp_path: Path, text: str) -> LoadedSettings:
    import argparse

    config = tmp_path / "krnet.toml"
    config.write_text(text, encoding="utf-8")
    return load_settings(argparse.Namespace(config=str(config), data_dir=str(tmp_path)))


@pytest.mark.parametrize("bad", ["9470", "localhost:9470", "127.0.0.1:0", "127.0.0.1:99999", ":1"])
def test_a_bad_metrics_bind_is_refused_with_the_fix(tmp_path: Path, bad: str) -> None:
    with pytest.raises(
        ConfigError, match=r"metrics_bind = .* is not IPV4:PORT: .*127\.0\.0\.1:9470"
    ):
        _load(tmp_path, f'metrics_bind = "{bad}"\n')


def test_metrics_bind_is_off_by_default_and_listed_by_config_show(tmp_path: Path) -> None:
    assert _load(tmp_path, "").settings.metrics_bind == ""
    loaded = _load(tmp_path, 'metrics_bind = "0.0.0.0:9470"\n')
    assert loaded.settings.metrics_bind == "0.0.0.0:9470"
    assert loaded.sources["metrics_bind"] == str(tmp_path / "krnet.toml")


def test_every_dashboard_expression_uses_exposed_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exposed: set[str] = set()
    for name in ("healthy_host", "healthy_runner"):
        exposed |= set(scrape(snapshot(name), tmp_path))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 6
    for expr in exprs:
        names = set(re.findall(r"\bkrnet_[a-z_]+", expr))
        assert names, expr
        assert names <= exposed, (expr, names - exposed)
