"""What `/metrics` says: a Prometheus collector over a recent snapshot and this process's counts.

State is read at scrape time: `NodeView` gathers a `NodeSnapshot` (the record through the
read-only reader, the kernel, firewall and Docker through observe) at most once every
`max_age` seconds however often it is scraped, and `/readyz` judges from the same snapshot. The
counts of events come from `krnet.core.control.counters`. Every name and label is documented
in docs/operations.md ("Metrics"); per-runner labels are only `runner_id`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from krnet.core.control.counters import CHANGE_KINDS, COUNTERS, Counters
from krnet.core.model.node_state import ProbeResult
from krnet.core.model.plan import RUNNER_TUNNEL, tunnel_name
from krnet.core.model.records import ACTIVE, INACTIVE
from krnet.core.observe.gather import gather_snapshot
from krnet.core.observe.health import not_ready
from krnet.core.record.reader import database_path
from krnet.errors import ErrorCode

if TYPE_CHECKING:
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

    from krnet.core.dataplane.probe import ProbeBook, ProbeOutcome, ProbeTarget
    from krnet.core.model.settings import LoadedSettings
    from krnet.core.model.snapshot import NodeSnapshot

MAX_AGE = 5.0  # seconds a snapshot serves scrapes before it is gathered again
READY_MAX_AGE = 1.0  # /readyz judges the kernel as it is now (requests in a burst share one look)
PROBE_TIMEOUT = 1.0
# how a runner probes the host: krnet.core.dataplane.probe.send_probes (targets, mtu, timeout)
Prober = Callable[[list["ProbeTarget"], int, float], list["ProbeOutcome"]]


class NodeView:
    """This node's latest snapshot, gathered again when older than `max_age` (thread-safe)."""

    def __init__(
        self,
        loaded: LoadedSettings,
        *,
        max_age: float = MAX_AGE,
        gather: Callable[[LoadedSettings], NodeSnapshot] = gather_snapshot,
        prober: Prober | None = None,
    ) -> None:
        self.loaded = loaded
        self.max_age = max_age
        self._gather = gather
        self._prober = prober
        self._lock = threading.Lock()
        self._snapshot: NodeSnapshot | None = None
        self._taken = 0.0
        self._runner_probe: ProbeResult | None = None
        self._probed = 0.0
        self._book: ProbeBook | None = None
        self._verdict: tuple[NodeSnapshot, str | None] | None = None

    def snapshot(self, max_age: float | None = None) -> NodeSnapshot:
        """The latest snapshot, gathered again when older than `max_age` (default: the view's)."""
        limit = self.max_age if max_age is None else min(max_age, self.max_age)
        with self._lock:
            now = time.monotonic()
            if self._snapshot is None or now - self._taken > limit:
                self._snapshot = self._gather(self.loaded)
                self._taken = time.monotonic()
                if self._snapshot.mode == "runner":
                    self._probe_host(self._snapshot)
            return self._snapshot

    def runner_probe(self) -> ProbeResult | None:
        """On a runner, its latest DF probe to the host's address on its subnet."""
        return self._runner_probe

    def not_ready(self, snapshot: NodeSnapshot | None = None) -> str | None:
        """What `/readyz` says is missing (None: ready), from the kernel as it is now (or from
        `snapshot`); diagnosed once per snapshot, however many ask."""
        judged = self.snapshot(READY_MAX_AGE) if snapshot is None else snapshot
        with self._lock:
            if self._verdict is None or self._verdict[0] is not judged:
                self._verdict = (judged, not_ready(judged))
            return self._verdict[1]

    def _probe_host(self, snapshot: NodeSnapshot) -> None:
        """A runner's probe round to the host, at most every probe_interval (the host probes the
        other way on its own timer)."""
        settings = snapshot.settings
        if not snapshot.runners or time.monotonic() - self._probed < settings.probe_interval:
            return
        if (
            RUNNER_TUNNEL not in snapshot.links
            or settings.overlay_bridge_name not in snapshot.links
        ):
            self._runner_probe = None
            return
        from krnet.core.dataplane import probe
        from krnet.errors import KrnetError

        rid = snapshot.runners[0].runner_id
        host_ip = str(settings.plan().runner(rid).host_ip_on_subnet)
        target = probe.ProbeTarget(rid, settings.overlay_bridge_name, host_ip)
        self._probed = time.monotonic()
        send = self._prober or probe.send_probes
        try:
            outcomes = send([target], settings.overlay_mtu, PROBE_TIMEOUT)
        except KrnetError:
            self._runner_probe = None
            return
        if self._book is None:
            self._book = probe.ProbeBook()  # the same window the host's probes keep
        for other in set(self._book.runner_ids()) - {rid}:
            self._book.forget(other)
        self._book.record_all(outcomes, datetime.now(timezone.utc))
        self._runner_probe = self._book.result(rid)


class KrnetCollector(Collector):
    """The `krnet_*` metrics of this node, read when Prometheus scrapes."""

    def __init__(self, view: NodeView, counters: Counters = COUNTERS) -> None:
        self.view = view
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        snapshot = self.view.snapshot()
        counts = self.counters.copy()
        yield from _state(snapshot, self.view.not_ready(snapshot))
        if snapshot.mode == "host":
            yield from _host(snapshot, counts, self.view.loaded.data_dir)
        else:
            yield from _runner(snapshot)
        yield from _probes(snapshot, self.view.runner_probe())
        yield from _counts(snapshot, counts)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _state(snapshot: NodeSnapshot, missing: str | None) -> Iterator[Metric]:
    yield _gauge(
        "krnet_ready",
        "1 when the overlay this node should have is in the kernel (as /readyz)",
        0.0 if missing else 1.0,
    )
    unread = GaugeMetricFamily(
        "krnet_state_unreadable",
        "1 for each part of the node's state the last snapshot could not read",
        labels=["part"],
    )
    for error in snapshot.errors:
        unread.add_metric([error.split(":", 1)[0]], 1.0)
    yield unread
    tunnels = GaugeMetricFamily(
        "krnet_tunnel_up",
        "1 when the runner's tunnel (vxkrN on the host, vxlan0 on a runner) exists and is up",
        labels=["runner_id"],
    )
    for runner in snapshot.runners:
        name = tunnel_name(runner.runner_id) if snapshot.mode == "host" else RUNNER_TUNNEL
        link = snapshot.links.get(name)
        tunnels.add_metric([str(runner.runner_id)], 1.0 if link and link.up else 0.0)
    yield tunnels


def _host(snapshot: NodeSnapshot, counts: Counters, data_dir: Path) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        "krnet_runners", "Runners in the record, by status", labels=["status"]
    )
    for status in (ACTIVE, INACTIVE):
        count = sum(1 for runner in snapshot.runners if runner.status == status)
        by_status.add_metric([status], float(count))
    yield by_status
    max_runners = snapshot.settings.plan().max_runners
    yield _gauge(
        "krnet_runner_ids_available",
        "Runner ids no runner holds",
        float(max_runners - len(snapshot.runners)),
    )
    yield _gauge("krnet_runner_ids_max", "Runner ids the address plan has", float(max_runners))
    age = GaugeMetricFamily(
        "krnet_runner_last_seen_age_seconds",
        "Seconds since the runner's last heartbeat (or join)",
        labels=["runner_id"],
    )
    for runner in snapshot.runners:
        seconds = (snapshot.taken_at - runner.last_seen).total_seconds()
        age.add_metric([str(runner.runner_id)], max(0.0, seconds))
    yield age
    from krnet.core.dataplane.firewall import guard_drops

    yield CounterMetricFamily(
        "krnet_guard_dropped_packets",
        "VXLAN packets from non-members the port guard dropped (the kernel's rule counter; "
        "resets when the rule is rewritten)",
        value=float(guard_drops(snapshot.rules)),
    )
    path = database_path(data_dir)
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    yield _gauge("krnet_record_size_bytes", "Size of the SQLite record with its WAL", float(size))
    yield CounterMetricFamily("krnet_joins", "Joins admitted", value=float(counts.joins))
    refusals = CounterMetricFamily(
        "krnet_refusals", "Connections refused, by error code", labels=["code"]
    )
    for code in sorted({*get_args(ErrorCode), *counts.refusals}):
        refusals.add_metric([code], float(counts.refusals[code]))
    yield refusals
    yield CounterMetricFamily(
        "krnet_heartbeats", "Heartbeats received", value=float(counts.heartbeats)
    )
    yield CounterMetricFamily(
        "krnet_reconcile_passes",
        "Reconcile passes completed",
        value=float(counts.reconcile_passes),
    )


def _runner(snapshot: NodeSnapshot) -> Iterator[Metric]:
    allocation = InfoMetricFamily(
        "krnet_allocation", "The allocation this runner holds", labels=["runner_id"]
    )
    for runner in snapshot.runners:
        allocation.add_metric(
            [str(runner.runner_id)], {"vni": str(runner.vni), "subnet": runner.subnet}
        )
    yield allocation
    bridge = snapshot.settings.overlay_bridge_name
    yield _gauge(
        "krnet_bridge_present",
        "1 when the overlay bridge exists and is up",
        1.0 if (link := snapshot.links.get(bridge)) and link.up else 0.0,
    )
    networks = GaugeMetricFamily(
        "krnet_docker_network_present",
        "1 for each of krnet's Docker networks that exists (overlay and fallback)",
        labels=["network"],
    )
    docker = snapshot.docker
    have = {network.name for network in docker.networks} if docker else set()
    for name in (snapshot.settings.overlay_network_name, snapshot.settings.docker_network_name):
        networks.add_metric([name], 1.0 if name in have else 0.0)
    yield networks
    yield _gauge(
        "krnet_docker_available", "1 when Docker answers", 1.0 if docker and docker.available else 0
    )


def _probes(snapshot: NodeSnapshot, runner_probe: ProbeResult | None) -> Iterator[Metric]:
    results = dict(snapshot.probes)
    if runner_probe is not None:
        results[runner_probe.runner_id] = runner_probe
    rtt = GaugeMetricFamily(
        "krnet_probe_rtt_seconds",
        "Round trip of the full-size DF probe through the runner's tunnel (mean of the window)",
        labels=["runner_id"],
    )
    loss = GaugeMetricFamily(
        "krnet_probe_loss_ratio",
        "Share of full-size DF probes lost through the runner's tunnel (0..1)",
        labels=["runner_id"],
    )
    for runner_id, result in sorted(results.items()):
        if result.rtt_ms is not None:
            rtt.add_metric([str(runner_id)], result.rtt_ms / 1000)
        loss.add_metric([str(runner_id)], result.loss)
    yield rtt
    yield loss


def _counts(snapshot: NodeSnapshot, counts: Counters) -> Iterator[Metric]:
    changes = CounterMetricFamily(
        "krnet_reconcile_changes",
        "Changes the data plane made to converge on what it should have, by kind",
        labels=["kind"],
    )
    for kind in sorted({*CHANGE_KINDS, *counts.changes}):
        changes.add_metric([kind], float(counts.changes[kind]))
    yield changes
    yield CounterMetricFamily(
        "krnet_dataplane_errors",
        "Data-plane operations that failed (tunnel builds, reconcile passes, probe rounds)",
        value=float(counts.dataplane_errors),
    )
