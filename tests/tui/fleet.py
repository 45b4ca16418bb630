"""Synthetic hosts of any size (up to 4,095 runners) for the TUI's scale tests and bench/tui.py.

Each is the recorded 255-runner host (tests/fixtures/snapshots/host_255.json) widened to
`overlay_runner_prefix` 20 inside 10.0.0.0/8, its runners, tunnels, routes and probes repeated
with the addresses the plan gives: the same two runners in trouble, every other check passing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from krnet.core.dataplane import firewall
from krnet.core.model.node_state import LinkInfo, ProbeResult, RouteInfo, RuleInfo
from krnet.core.model.plan import OverlayPlan, tunnel_name
from krnet.core.model.records import RunnerRecord
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import load_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "host_255.json"
RUNNER_PREFIX = 20  # 4,095 runner blocks inside the default /8
TEMPLATE = 9  # the healthy runner every synthetic one is shaped after


def fleet(runners: int, base: NodeSnapshot | None = None) -> NodeSnapshot:
    """A host with `runners` runners (ids 1..runners), planned at /20 (4,095 blocks)."""
    base = base or load_file(FIXTURE)
    settings = dataclasses.replace(base.settings, overlay_runner_prefix=RUNNER_PREFIX)
    plan = settings.plan()
    records = {r.runner_id: r for r in base.runners}
    shaped = [_runner(plan, records.get(rid) or records[TEMPLATE], rid) for rid in _ids(runners)]
    template_link = base.links[tunnel_name(TEMPLATE)]
    links = {name: link for name, link in base.links.items() if not name.startswith("vxkr")}
    for record in shaped:
        link = base.links.get(tunnel_name(record.runner_id), template_link)
        links[tunnel_name(record.runner_id)] = _tunnel(plan, link, record)
    routes = [route for route in base.routes if not (route.dev or "").startswith("vxkr")]
    routes += [RouteInfo(r.subnet, None, tunnel_name(r.runner_id)) for r in shaped]
    sysctls = {k: v for k, v in base.sysctls.items() if ".vxkr" not in k}
    sysctls |= {f"net.ipv4.conf.{tunnel_name(r.runner_id)}.rp_filter": "2" for r in shaped}
    probe = base.probes[TEMPLATE]
    probes = {
        r.runner_id: base.probes.get(r.runner_id) or _probe(probe, r.runner_id) for r in shaped
    }
    peers = [r.physical_ip for r in shaped]
    fw = firewall.FirewallPlan("host", str(plan.network), settings.overlay_vxlan_port, True, peers)
    return dataclasses.replace(
        base,
        settings=settings,
        rules=_counted(base, firewall.expected_rules(fw)),
        guard_allowlist=tuple(fw.guard_peers),
        runners=tuple(shaped),
        links=links,
        routes=tuple(routes),
        sysctls=sysctls,
        probes=probes,
    )


def _counted(base: NodeSnapshot, rules: tuple[RuleInfo, ...]) -> tuple[RuleInfo, ...]:
    """The expected rules with the recorded counters (new rules count like the last one)."""
    counted = list(base.rules)
    return tuple(
        dataclasses.replace(rule, packets=counted[min(i, len(counted) - 1)].packets)
        for i, rule in enumerate(rules)
    )


def _ids(runners: int) -> range:
    return range(1, runners + 1)


def _runner(plan: OverlayPlan, template: RunnerRecord, rid: int) -> RunnerRecord:
    addresses = plan.runner(rid)
    physical_ip = template.physical_ip if rid <= 255 else f"100.64.{rid // 256}.{rid % 256}"
    observed = {
        **template.observed,
        "vni": addresses.vni,
        "local": physical_ip,
        "bridge_addresses": [str(addresses.gateway_interface)],
    }
    return dataclasses.replace(
        template,
        runner_id=rid,
        hostname=template.hostname if rid <= 255 else f"runner-{rid}",
        physical_ip=physical_ip,
        vni=addresses.vni,
        subnet=str(addresses.subnet),
        observed=observed,
    )


def _tunnel(plan: OverlayPlan, link: LinkInfo, record: RunnerRecord) -> LinkInfo:
    rid = record.runner_id
    vxlan = link.vxlan and dataclasses.replace(
        link.vxlan, vni=record.vni, remote=record.physical_ip
    )
    return dataclasses.replace(
        link,
        name=tunnel_name(rid),
        index=100 + rid,
        mac=f"02:6b:72:00:{rid // 256:02x}:{rid % 256:02x}",
        addresses=(str(plan.runner(rid).host_interface_address),),
        vxlan=vxlan,
    )


def _probe(template: ProbeResult, rid: int) -> ProbeResult:
    return dataclasses.replace(template, runner_id=rid, rtt_ms=0.25 + rid / 1000)
