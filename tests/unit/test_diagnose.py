"""Diagnosis case by case, from recorded snapshots: each fault gives its check, detail and fix."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from krnet.core.model.node_state import ProbeResult
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import load_file
from krnet.core.observe.diagnose.engine import (
    FAIL,
    PASS,
    WARN,
    Check,
    diagnose,
    format_age,
    runner_health,
    runner_mismatches,
    worst_first,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"


def snapshot(name: str) -> NodeSnapshot:
    return load_file(FIXTURES / f"{name}.json")


def problems(snap: NodeSnapshot) -> list[Check]:
    return [check for check in diagnose(snap) if check.status != PASS]


def only_problem(snap: NodeSnapshot) -> Check:
    found = problems(snap)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("name", ["healthy_host", "healthy_runner"])
def test_healthy_nodes_pass_every_check(name: str) -> None:
    checks = diagnose(snapshot(name))
    assert problems(snapshot(name)) == []
    assert {"ip_forward", "tunnels", "vni_map", "link_mtu", "firewall", "port_guard"} <= {
        check.check for check in checks
    }
    assert all(check.fix == "" for check in checks)


def test_host_checks_cover_the_issue_list() -> None:
    names = {check.check for check in diagnose(snapshot("healthy_host"))}
    assert names >= {
        "host_reachable_address",
        "ip_forward",
        "settings_match",
        "underlay_mtu",
        "link_mtu",
        "vni_map",
        "firewall",
        "port_guard",
        "rp_filter",
        "runner_silent",
        "probe",
    }


def test_runner_checks_docker_and_not_host_only_things() -> None:
    names = {check.check for check in diagnose(snapshot("healthy_runner"))}
    assert "docker" in names
    assert "host_reachable_address" not in names and "runner_silent" not in names


def test_mtu_mismatch_on_vxkr1() -> None:
    check = only_problem(snapshot("mtu_mismatch"))
    assert (check.check, check.status, check.runner_id) == ("link_mtu", FAIL, 1)
    assert "vxkr1 has MTU 1400, expected 1450" in check.detail
    assert check.fix.startswith("ip link set dev vxkr1 mtu 1450")


def test_missing_forward_rule() -> None:
    check = only_problem(snapshot("missing_forward_rule"))
    assert (check.check, check.status) == ("firewall", FAIL)
    assert "KRNET-FORWARD rule `-s 10.0.0.0/8 -j ACCEPT`" in check.detail
    assert check.fix.startswith("iptables -t filter -A KRNET-FORWARD -s 10.0.0.0/8 -j ACCEPT")


def test_missing_jump_is_inserted_first() -> None:
    snap = snapshot("healthy_host")
    rules = tuple(rule for rule in snap.rules if rule.spec != "-j KRNET-FORWARD")
    check = only_problem(dataclasses.replace(snap, rules=rules))
    assert check.fix.startswith("iptables -t filter -I FORWARD 1 -j KRNET-FORWARD")


def test_runner_missing_masquerade() -> None:
    snap = snapshot("healthy_runner")
    rules = tuple(rule for rule in snap.rules if "MASQUERADE" not in rule.spec)
    check = only_problem(dataclasses.replace(snap, rules=rules))
    assert "nat KRNET-POSTROUTING" in check.detail and "outside the overlay" in check.detail


def test_loopback_reachable_address_warns_with_a_real_address() -> None:
    check = only_problem(snapshot("loopback_address"))
    assert (check.check, check.status) == ("host_reachable_address", WARN)
    assert "127.0.0.1 (loopback)" in check.detail
    assert (
        check.fix
        == 'set host_reachable_address = "192.0.2.1" in krnet.toml (HOST_REACHABLE_ADDRESS)'
    )


def test_reachable_address_not_on_any_link_fails() -> None:
    snap = snapshot("healthy_host")
    settings = dataclasses.replace(snap.settings, host_reachable_address="192.0.2.99")
    check = only_problem(dataclasses.replace(snap, settings=settings))
    assert (check.check, check.status) == ("host_reachable_address", FAIL)
    assert "192.0.2.99 is on no link" in check.detail


def test_vni_conflict() -> None:
    found = problems(snapshot("vni_conflict"))
    assert {check.check for check in found} == {"vni_map"}
    details = "\n".join(check.detail for check in found)
    assert "vxkr2 on this node has VNI 101 for runner 2; expected 102" in details
    assert "VNI 101 on port 4789 is used by vxkr1, vxkr2" in details
    assert "foreign VXLAN link flannel.1 (VNI 150) shares UDP port 4789" in details
    shared = next(check for check in found if "is used by" in check.detail)
    assert shared.fix.startswith("ip link del vxkr2;") and shared.runner_id == 2


def test_foreign_vxlan_outside_our_range_only_warns() -> None:
    snap = snapshot("vni_conflict")
    links = {name: link for name, link in snap.links.items() if name != "vxkr2"}
    links["vxkr2"] = snapshot("healthy_host").links["vxkr2"]
    flannel = links["flannel.1"]
    assert flannel.vxlan is not None
    links["flannel.1"] = dataclasses.replace(
        flannel, vxlan=dataclasses.replace(flannel.vxlan, vni=7000)
    )
    check = only_problem(dataclasses.replace(snap, links=links))
    assert (check.check, check.status) == ("vni_map", WARN)


def test_silent_runner() -> None:
    found = problems(snapshot("silent_runner"))
    silent = next(check for check in found if check.check == "runner_silent")
    assert silent.status == WARN and silent.runner_id == 3
    assert "silent for 5m (runner_timeout 30s)" in silent.detail
    probe = next(check for check in found if check.check == "probe")
    assert probe.status == FAIL and "UDP 4789 is blocked" in probe.detail


def test_guard_allowlist_drift() -> None:
    found = problems(snapshot("guard_drift"))
    assert [(c.check, c.status, c.runner_id) for c in found] == [
        ("port_guard", FAIL, 2),
        ("port_guard", WARN, None),
    ]
    assert (
        "198.51.100.2" in found[0].detail and "ipset add krnet-vxlan 198.51.100.2" in found[0].fix
    )
    assert found[1].fix.startswith("ipset del krnet-vxlan 203.0.113.99")


def test_guard_disabled_warns_and_expects_an_open_port() -> None:
    snap = snapshot("healthy_host")
    settings = dataclasses.replace(snap.settings, vxlan_port_guard=False)
    found = problems(dataclasses.replace(snap, settings=settings))
    assert [(c.check, c.status) for c in found] == [("firewall", FAIL), ("port_guard", WARN)]
    assert "KRNET-VXLAN rule `-p udp -m udp --dport 4789 -j ACCEPT`" in found[0].detail


def test_docker_down() -> None:
    check = only_problem(snapshot("docker_down"))
    assert (check.check, check.status) == ("docker", FAIL)
    assert "connection refused" in check.detail and "systemctl start docker" in check.fix


def test_docker_network_without_mtu() -> None:
    snap = snapshot("healthy_runner")
    assert snap.docker is not None
    overlay = dataclasses.replace(snap.docker.networks[0], mtu=None)
    docker = dataclasses.replace(snap.docker, networks=(overlay, *snap.docker.networks[1:]))
    check = only_problem(dataclasses.replace(snap, docker=docker))
    assert check.check == "link_mtu" and "unset (Docker's 1500)" in check.detail


def test_docker_overlay_not_ready_falls_back() -> None:
    snap = snapshot("healthy_runner")
    links = {name: link for name, link in snap.links.items() if name != "vxlan0"}
    assert snap.docker is not None
    docker = dataclasses.replace(snap.docker, selected_network="kohakuriver-net")
    found = problems(dataclasses.replace(snap, links=links, docker=docker))
    assert ("docker", WARN) in [(c.check, c.status) for c in found]
    assert ("tunnels", FAIL) in [(c.check, c.status) for c in found]


def test_ip_forward_off() -> None:
    snap = snapshot("healthy_runner")
    check = only_problem(
        dataclasses.replace(snap, sysctls={**snap.sysctls, "net.ipv4.ip_forward": "0"})
    )
    assert (check.check, check.status) == ("ip_forward", FAIL)
    assert check.fix.startswith("sysctl -w net.ipv4.ip_forward=1")


def test_underlay_too_small_for_overlay_mtu() -> None:
    snap = dataclasses.replace(snapshot("healthy_host"), underlay_mtu=1400)
    check = only_problem(snap)
    assert (check.check, check.status) == ("underlay_mtu", FAIL)
    assert "1500 exceeds eth0's MTU 1400" in check.detail
    assert check.fix.startswith("set overlay_mtu = 1350")


def test_settings_mismatch_reported_by_a_runner() -> None:
    snap = snapshot("healthy_host")
    runners = (dataclasses.replace(snap.runners[0], mtu=1400, vxlan_port=4790), *snap.runners[1:])
    found = problems(dataclasses.replace(snap, runners=runners))
    assert [c.check for c in found] == ["settings_match", "settings_match"]
    assert "overlay_vxlan_port 4790, the host has 4789" in found[0].detail
    assert found[1].fix == "set overlay_mtu = 1450 on runner-1 and restart its agent"


def test_runner_end_observed_mtu_and_vni() -> None:
    snap = snapshot("healthy_host")
    observed = {**snap.runners[1].observed, "mtu": 1400, "vni": 202}
    runners = (
        snap.runners[0],
        dataclasses.replace(snap.runners[1], observed=observed),
        *snap.runners[2:],
    )
    found = problems(dataclasses.replace(snap, runners=runners))
    assert {(c.check, c.runner_id) for c in found} == {("link_mtu", 2), ("vni_map", 2)}
    mismatches = runner_mismatches(dataclasses.replace(snap, runners=runners))
    assert mismatches[1] == [] and len(mismatches[2]) == 2


def test_tunnel_missing_down_and_retargeted() -> None:
    snap = snapshot("healthy_host")
    links = dict(snap.links)
    del links["vxkr1"]
    vxkr2 = links["vxkr2"]
    assert vxkr2.vxlan is not None
    links["vxkr2"] = dataclasses.replace(
        vxkr2, up=False, vxlan=dataclasses.replace(vxkr2.vxlan, remote="198.51.100.99")
    )
    found = problems(dataclasses.replace(snap, links=links))
    details = [c.detail for c in found if c.check == "tunnels"]
    assert any("vxkr1 of runner 1" in d and "missing" in d for d in details)
    assert any("vxkr2 of runner 2" in d and "down" in d for d in details)
    assert any("sends to 198.51.100.99" in d for d in details)


def test_missing_route() -> None:
    snap = snapshot("healthy_runner")
    routes = tuple(route for route in snap.routes if route.dst != "10.0.0.0/8")
    check = only_problem(dataclasses.replace(snap, routes=routes))
    assert check.fix == "ip route replace 10.0.0.0/8 via 10.1.0.254"


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("net.ipv4.conf.vxkr2.rp_filter", "1", "sysctl -w net.ipv4.conf.vxkr2.rp_filter=2"),
        ("net.ipv4.conf.all.rp_filter", "1", "sysctl -w net.ipv4.conf.all.rp_filter=2"),
    ],
)
def test_strict_rp_filter_warns(key: str, value: str, fix: str) -> None:
    snap = snapshot("healthy_host")
    loose = {k: ("0" if k.endswith("rp_filter") else v) for k, v in snap.sysctls.items()}
    check = only_problem(dataclasses.replace(snap, sysctls={**loose, key: value}))
    assert (check.check, check.status) == ("rp_filter", WARN)
    assert check.fix.startswith(fix)


def test_loose_rp_filter_on_a_link_wins_over_strict_all() -> None:
    snap = snapshot("healthy_host")  # vxkrN at 2: the kernel uses max(all, link)
    sysctls = {**snap.sysctls, "net.ipv4.conf.all.rp_filter": "1"}
    assert problems(dataclasses.replace(snap, sysctls=sysctls)) == []


def test_probe_black_hole_and_partial_loss() -> None:
    snap = snapshot("healthy_host")
    at = snap.taken_at - timedelta(minutes=1)
    probes = {
        **snap.probes,
        1: ProbeResult(1, 10, 0, None, at, small_sent=10, small_received=10),
        2: ProbeResult(2, 10, 7, 0.4, at, small_sent=10, small_received=10),
    }
    found = problems(dataclasses.replace(snap, probes=probes))
    assert [(c.status, c.runner_id) for c in found] == [(FAIL, 1), (WARN, 2)]
    assert "MTU black hole on vxkr1" in found[0].detail
    assert "ping -M do -s 1422 -I vxkr1 10.1.0.1" in found[0].fix


def test_unread_parts_are_skipped_and_said() -> None:
    snap = dataclasses.replace(
        snapshot("healthy_host"), rules=(), errors=("firewall: iptables is not installed",)
    )
    found = problems(snap)
    assert [(c.check, c.status) for c in found] == [("read_state", WARN)]


def test_overlay_disabled_skips_overlay_checks() -> None:
    snap = snapshot("healthy_runner")
    settings = dataclasses.replace(snap.settings, overlay_enabled=False)
    assert snap.docker is not None
    docker = dataclasses.replace(snap.docker, selected_network="kohakuriver-net")
    checks = diagnose(dataclasses.replace(snap, settings=settings, docker=docker))
    assert [(c.check, c.status) for c in checks] == [
        ("overlay_enabled", WARN),
        ("docker_subnet", PASS),
        ("docker", PASS),
    ]


def test_worst_first_health_and_mismatches() -> None:
    snap = snapshot("mixed_host")
    checks = diagnose(snap)
    ordered = worst_first(checks)
    statuses = [c.status for c in ordered]
    assert statuses == sorted(statuses, key=[FAIL, WARN, PASS].index)
    assert statuses[0] == FAIL
    assert runner_health(checks) == {2: FAIL, 3: FAIL, 4: FAIL}
    mismatches = runner_mismatches(snap, checks)
    assert set(mismatches) == {1, 2, 3, 4, 5}
    assert mismatches[2] == [next(c.detail for c in checks if c.check == "link_mtu")]
    assert mismatches[3] == []  # silence and probe loss are not mismatches


def test_doctor_json_form() -> None:
    check = Check("ip_forward", FAIL, "off", "sysctl -w net.ipv4.ip_forward=1", 3)
    assert check.to_json() == {
        "check": "ip_forward",
        "status": "fail",
        "detail": "off",
        "fix": "sysctl -w net.ipv4.ip_forward=1",
    }


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (75, "1m 15s"), (3600, "1h"), (90061, "1d 1h")]
)
def test_format_age(seconds: int, text: str) -> None:
    assert format_age(timedelta(seconds=seconds)) == text


def test_full_pool_diagnoses_the_two_faults() -> None:
    found = problems(snapshot("host_255"))
    assert {(c.check, c.runner_id) for c in found} == {("link_mtu", 7), ("runner_silent", 42)}


def test_far_end_from_the_runners_heartbeat() -> None:
    snap = snapshot("healthy_host")
    runners = list(snap.runners)
    runners[0] = dataclasses.replace(
        runners[0], observed={**runners[0].observed, "tunnel_up": False, "remote": "192.0.2.77"}
    )
    runners[1] = dataclasses.replace(
        runners[1], observed={**runners[1].observed, "port": 4790, "bridge_mtu": 1500}
    )
    runners[2] = dataclasses.replace(
        runners[2],
        observed={
            **runners[2].observed,
            "docker_available": False,
            "docker_error": "connection refused",
        },
    )
    found = problems(dataclasses.replace(snap, runners=tuple(runners)))
    got = {(c.check, c.status, c.runner_id, c.detail.split(":")[0][:40]) for c in found}
    assert ("far_end", FAIL, 1, "runner 1 (runner-1)'s vxlan0 is down") in got
    assert any(c.runner_id == 1 and "sends to 192.0.2.77" in c.detail for c in found)
    assert any(c.runner_id == 2 and "UDP port 4790, the host 4789" in c.detail for c in found)
    assert any(
        c.check == "link_mtu" and c.runner_id == 2 and "on kohaku-overlay" in c.detail
        for c in found
    )
    assert any(
        c.status == WARN and c.runner_id == 3 and "connection refused" in c.detail for c in found
    )
