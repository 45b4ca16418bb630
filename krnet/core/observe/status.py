"""The `krnet node overlay` view: the docs/design.md JSON object and the human table, from records.

Pure: the caller reads the record (and, if it likes, probes) and passes `now`. A record still
marked active but silent for longer than `runner_timeout` is shown inactive, so the view is
right even while no `krnet serve` runs to mark it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

from krnet.core.model.must_match import differences
from krnet.core.model.plan import (
    GATEWAY_OFFSET,
    HOST_ON_SUBNET_OFFSET,
    RUNNER_TUNNEL,
    OverlayPlan,
    tunnel_name,
)
from krnet.core.model.records import ACTIVE, RunnerRecord
from krnet.core.model.runner_state import NOT_JOINED, OVERLAY_OFF, RunnerState, held_settings
from krnet.core.model.settings import Mode, Settings
from krnet.core.model.text import printable
from krnet.core.observe.diagnose.far_end import far_end_mismatches, judge_far_end

PROBE_STALE_PERIODS = 3  # results older than this many probe intervals are not shown

_TABLE_COLUMNS = (
    ("ID", "runner_id"),
    ("RUNNER", "hostname"),
    ("PHYSICAL IP", "physical_ip"),
    ("VNI", "vni"),
    ("SUBNET", "subnet"),
    ("GATEWAY", "gateway"),
    ("HOST IP", "host_ip"),
    ("INTERFACE", "interface"),
    ("STATUS", "status"),
    ("NETWORK", "network"),
    ("LAST SEEN", "last_seen"),
)


def runner_settings(settings: Settings, state: RunnerState | None) -> Settings:
    """The settings a runner is judged by: with the overlay scheme of the allocation it holds,
    else (no allocation, or the overlay off) its own."""
    if settings.mode != "runner" or not settings.overlay_enabled or state is None:
        return settings
    return held_settings(settings, state.allocation) if state.allocation else settings


def network_selection(settings: Settings, state: RunnerState | None) -> dict[str, object]:
    """A runner's `network`, `network_reason` and `gateway` (reference: "Network Selection")."""
    fallback = {"network": settings.docker_network_name, "gateway": settings.docker_network_gateway}
    if not settings.overlay_enabled:
        return {**fallback, "network_reason": OVERLAY_OFF}
    if state is None:
        return {**fallback, "network_reason": NOT_JOINED}
    if state.network_reason is not None or state.allocation is None:
        return {**fallback, "network_reason": state.network_reason or NOT_JOINED}
    return {
        "network": state.network,
        "network_reason": None,
        "gateway": state.allocation.gateway,
    }


def overlay_status(
    *,
    mode: Mode,
    settings: Settings,
    runners: Sequence[RunnerRecord],
    now: datetime,
    runner_timeout: float,
    interface_for: Callable[[RunnerRecord], str] | None = None,
    extra: Mapping[int, Mapping[str, object]] | None = None,
    runner_state: RunnerState | None = None,
) -> dict[str, object]:
    """The object `krnet node overlay --json` prints (docs/design.md "Command line").

    On a runner, judged by the allocation it holds (`runner_state`) and saying which network
    containers use now.
    """
    local = settings
    if mode == "runner":
        settings = runner_settings(settings, runner_state)
    plan = settings.plan()
    name_of = interface_for or _default_interface(mode)
    entries = []
    for record in sorted(runners, key=lambda record: record.runner_id):
        entry = _runner_entry(record, mode, settings, plan, now, runner_timeout, name_of(record))
        _merge(entry, (extra or {}).get(record.runner_id, {}))
        entries.append(entry)
    active = sum(1 for entry in entries if entry["status"] == ACTIVE)
    held = {record.runner_id for record in runners if 1 <= record.runner_id <= plan.max_runners}
    selection = network_selection(local, runner_state) if mode == "runner" else {}
    return {
        "mode": mode,
        **selection,
        "host_overlay_ip": str(plan.host_interface),
        "vxlan_id_base": settings.overlay_vxlan_id,
        "vxlan_port": settings.overlay_vxlan_port,
        "mtu": settings.overlay_mtu,
        "max_runners": plan.max_runners,
        "total": len(entries),
        "active": active,
        "inactive": len(entries) - active,
        "available_ids": plan.max_runners - len(held),
        "overlay_mode": settings.overlay_mode,
        "runners": entries,
    }


def mismatches(
    record: RunnerRecord, settings: Settings, plan: OverlayPlan, mode: Mode = "host"
) -> list[str]:
    """Where a runner's reported settings, record and observed link disagree with this node."""
    return (
        _reported_mismatches(record, settings, mode)
        + _plan_mismatches(record, plan)
        + far_end_mismatches(judge_far_end(record, settings))
    )


def _reported_mismatches(record: RunnerRecord, settings: Settings, mode: Mode) -> list[str]:
    """The settings the runner joined with, against this node's (they must be equal)."""
    theirs, ours = ("runner", "host") if mode == "host" else ("at join", "configured")
    return [
        f"{found.rule.field}: {theirs} {found.reported}, {ours} {found.expected}"
        for found in differences(settings, record)
    ]


def _plan_mismatches(record: RunnerRecord, plan: OverlayPlan) -> list[str]:
    """The record's VNI and subnet, against what the address plan gives its id."""
    if not 1 <= record.runner_id <= plan.max_runners:
        return [f"runner id {record.runner_id}: outside this plan's 1..{plan.max_runners}"]
    planned = plan.runner(record.runner_id)
    found = []
    if record.vni != planned.vni:
        found.append(f"vni: record {record.vni}, plan {planned.vni}")
    if record.subnet != str(planned.subnet):
        found.append(f"subnet: record {record.subnet}, plan {planned.subnet}")
    return found


def render_overlay_table(status: Mapping[str, object], *, bridge: str | None = None) -> str:
    """The human view, like `kohakuriver node overlay`: totals, then one row per runner.

    Every value is escaped of control characters: a runner's hostname and heartbeat, or a
    remote host's whole answer, came from the network.
    """
    runners = _entries(status)
    status = {key: _cell(value) for key, value in status.items() if key != "runners"}
    reason = f" ({status['network_reason']})" if status.get("network_reason") else ""
    summary = [
        f"Overlay network ({status['mode']})",
        *(
            [f"  Containers use: {status['network']}, gateway {status['gateway']}{reason}"]
            if "network" in status
            else []
        ),
        f"  Host IP:        {status['host_overlay_ip']}",
        *([f"  Bridge:         {bridge}"] if bridge else []),
        f"  VXLAN:          id base {status['vxlan_id_base']}, port {status['vxlan_port']}, "
        f"MTU {status['mtu']}",
        f"  Allocations:    {status['total']} ({status['active']} active, "
        f"{status['inactive']} inactive)",
        f"  Available IDs:  {status['available_ids']}/{status['max_runners']}",
        *(["  Overlay mode:   direct"] if status.get("overlay_mode") == "direct" else []),
        "",
    ]
    if not runners:
        return "\n".join([*summary, "No runner allocations."]) + "\n"
    rows = [[title for title, _ in _TABLE_COLUMNS]]
    rows += [[_cell(entry.get(key)) for _, key in _TABLE_COLUMNS] for entry in runners]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_COLUMNS))]
    table = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    notes = [
        f"runner {_cell(entry['runner_id'])} ({_cell(entry['hostname'])}): {_cell(problem)}"
        for entry in runners
        for problem in _strings(entry.get("mismatches"))
    ]
    if notes:
        table += ["", "Mismatches:", *(f"  {note}" for note in notes)]
    pairs = [
        f"runner {_cell(entry['runner_id'])} -> {_cell(pair.get('runner_id'))} "
        f"({_cell(pair.get('physical_ip'))}): {_cell(pair.get('path'))} "
        f"since {_cell(pair.get('since'))}"
        + (f", last probe {_cell(pair['last_probe'])}" if pair.get("last_probe") else "")
        for entry in runners
        for pair in _entries({"runners": entry.get("direct_peers")})
    ]
    if pairs:
        table += ["", "Direct paths:", *(f"  {pair}" for pair in pairs)]
    return "\n".join([*summary, *table]) + "\n"


def probe_extra(data_dir: Path, settings: Settings, now: datetime) -> dict[int, dict[str, object]]:
    """The host service's published probe results as per-runner `probe` objects for `extra`."""
    from krnet.core.dataplane import probe

    stale_after = PROBE_STALE_PERIODS * settings.probe_interval
    results = probe.read_results(data_dir / probe.RESULTS_FILE, now, stale_after)
    return {
        runner_id: {
            "probe": {
                "sent": result.sent,
                "received": result.received,
                "loss": round(result.loss, 3),
                "small_loss": round(result.small_loss, 3),
                "rtt_ms": result.rtt_ms,
                "last_success": iso_utc(result.last_success) if result.last_success else None,
            }
        }
        for runner_id, result in results.items()
    }


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else printable(str(value))


def iso_utc(moment: datetime) -> str:
    """Whole seconds in UTC, as docs/design.md writes them: 2026-11-28T01:02:03Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _runner_entry(
    record: RunnerRecord,
    mode: Mode,
    settings: Settings,
    plan: OverlayPlan,
    now: datetime,
    runner_timeout: float,
    interface: str,
) -> dict[str, object]:
    subnet = IPv4Network(record.subnet)
    return {
        "runner_id": record.runner_id,
        "hostname": record.hostname,
        "physical_ip": record.physical_ip,
        "vni": record.vni,
        "subnet": str(subnet),
        "gateway": str(subnet.network_address + GATEWAY_OFFSET),
        "host_ip": str(subnet.network_address + HOST_ON_SUBNET_OFFSET),
        "interface": interface,
        "status": record.status_at(now, runner_timeout),
        "last_seen": iso_utc(record.last_seen),
        "mismatches": mismatches(record, settings, plan, mode),
        # the Docker network its containers should use (reference: "Network Selection"), as the
        # runner last reported it; None before its first heartbeat
        "network": record.report.network,
        "probe": None,  # the hub's DF probe through this tunnel (host only; see probe_extra)
        **({"direct_peers": direct_paths(record)} if settings.overlay_mode == "direct" else {}),
    }


def direct_paths(record: RunnerRecord) -> list[dict[str, object]]:
    """Each pair of a direct-mode runner as it last reported it: direct or via the hub. The
    last probe is the runner's own record's (None on the host: heartbeats leave it out)."""
    return [
        {
            "runner_id": pair.runner_id,
            "physical_ip": pair.physical_ip,
            "path": pair.path,
            "since": iso_utc(pair.since),
            "last_probe": iso_utc(pair.last_probe) if pair.last_probe else None,
            "last_probe_ok": pair.last_probe_ok,
        }
        for pair in record.report.direct_peers
    ]


def _default_interface(mode: Mode) -> Callable[[RunnerRecord], str]:
    if mode == "runner":
        return lambda _record: RUNNER_TUNNEL
    return lambda record: tunnel_name(record.runner_id)


def _merge(entry: dict[str, object], extra: Mapping[str, object]) -> None:
    """Add per-runner keys; extra mismatches join the computed ones instead of replacing them."""
    for key, value in extra.items():
        if key == "mismatches":
            known = _strings(entry["mismatches"])
            entry[key] = known + [item for item in _strings(value) if item not in known]
        else:
            entry[key] = value


def _entries(status: Mapping[str, object]) -> list[Mapping[str, object]]:
    runners = status.get("runners")
    return (
        [entry for entry in runners if isinstance(entry, Mapping)]
        if isinstance(runners, list)
        else []
    )


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list | tuple) else []
