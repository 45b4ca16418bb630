"""Snapshot JSON: every recorded fixture and every generated snapshot survives a round trip."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krnet.core.model.node_state import (
    DockerNetworkInfo,
    DockerState,
    LinkInfo,
    ProbeResult,
    RouteInfo,
    RuleInfo,
    VxlanInfo,
)
from krnet.core.model.records import EventRecord, RunnerRecord
from krnet.core.model.settings import Settings
from krnet.core.model.snapshot import NodeSnapshot
from krnet.core.model.snapshot_json import (
    dumps,
    load_file,
    loads,
    snapshot_from_json,
    snapshot_to_json,
)

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "snapshots").glob("*.json"))

text = st.text(max_size=12)
ints = st.integers(min_value=0, max_value=2**40)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=9))]),
)
optional_text = st.none() | text
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=5,
)

vxlans = st.builds(VxlanInfo, ints, optional_text, optional_text, ints, st.booleans())
links = st.builds(
    LinkInfo,
    name=text,
    index=ints,
    kind=optional_text,
    mtu=ints,
    up=st.booleans(),
    mac=optional_text,
    master=optional_text,
    addresses=st.lists(text, max_size=3).map(tuple),
    vxlan=st.none() | vxlans,
    rx_bytes=ints,
    tx_bytes=ints,
)
runners = st.builds(
    RunnerRecord,
    runner_id=ints,
    identity_hash=optional_text,
    hostname=text,
    physical_ip=text,
    vni=ints,
    subnet=text,
    status=text,
    first_seen=moments,
    last_seen=moments,
    vxlan_id=ints,
    vxlan_port=ints,
    mtu=ints,
    observed=st.dictionaries(text, json_values, max_size=4),
)
networks = st.builds(
    DockerNetworkInfo,
    name=text,
    driver=text,
    subnet=optional_text,
    gateway=optional_text,
    bridge=optional_text,
    mtu=st.none() | ints,
    aux_addresses=st.dictionaries(text, text, max_size=2),
    containers=st.lists(text, max_size=2).map(tuple),
)
probes = st.builds(
    ProbeResult,
    runner_id=ints,
    sent=ints,
    received=ints,
    rtt_ms=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    last_success=st.none() | moments,
    small_sent=ints,
    small_received=ints,
)
snapshots = st.builds(
    NodeSnapshot,
    taken_at=moments,
    mode=st.sampled_from(["host", "runner"]),
    settings=st.builds(
        Settings,
        mode=st.sampled_from(["host", "runner"]),
        host_address=optional_text,
        overlay_mtu=ints,
        heartbeat_interval=st.floats(0, 100),
        vxlan_port_guard=st.booleans(),
    ),
    runners=st.lists(runners, max_size=3).map(tuple),
    links=st.dictionaries(text, links, max_size=3),
    routes=st.lists(st.builds(RouteInfo, text, optional_text, optional_text), max_size=3).map(
        tuple
    ),
    rules=st.lists(st.builds(RuleInfo, text, text, text, ints, ints), max_size=3).map(tuple),
    guard_allowlist=st.lists(text, max_size=3).map(tuple),
    docker=st.none()
    | st.builds(
        DockerState, st.booleans(), optional_text, st.lists(networks, max_size=2).map(tuple)
    ),
    sysctls=st.dictionaries(text, text, max_size=3),
    underlay_link=optional_text,
    underlay_mtu=st.none() | ints,
    probes=st.dictionaries(ints, probes, max_size=2),
    events=st.lists(
        st.builds(EventRecord, ints, moments, text, st.none() | ints, text), max_size=2
    ).map(tuple),
    errors=st.lists(text, max_size=2).map(tuple),
    hostname=text,
)


@settings(max_examples=150, deadline=None)
@given(snapshots)
def test_round_trip_is_lossless(snapshot: NodeSnapshot) -> None:
    assert loads(dumps(snapshot)) == snapshot


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_recorded_fixtures_round_trip_byte_for_byte(path: Path) -> None:
    snapshot = load_file(path)
    assert isinstance(snapshot.settings, Settings)
    assert dumps(snapshot) == path.read_text(encoding="utf-8")


def test_types_are_restored() -> None:
    snapshot = load_file(FIXTURES[0])
    data = json.loads(dumps(snapshot))
    again = snapshot_from_json(data)
    assert all(isinstance(key, int) for key in again.probes) or not again.probes
    assert again.taken_at.tzinfo is not None
    assert snapshot_to_json(again)["format"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 99}, "snapshot format 99"),
        ({"surprise": 1}, "snapshot: unknown field(s) surprise"),
        ({"links": {"eth0": {"name": "eth0", "bogus": 1}}}, "snapshot.links[eth0]: unknown field"),
        ({"docker": [1]}, "snapshot.docker: expected an object"),
    ],
)
def test_bad_input_names_the_field(change: dict[str, object], message: str) -> None:
    data = {**json.loads(dumps(load_file(FIXTURES[0]))), **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        snapshot_from_json(data)
