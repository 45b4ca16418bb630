"""The runner's report of its own end: what each heartbeat says its links look like.

The runner data plane builds it, the agent sends its wire form in every heartbeat, the host
stores that form in the record (`RunnerRecord.observed`, with the host's `applied` beside it),
and status, diagnosis and the TUI read it through `RunnerRecord.report`. The wire form has
three shapes, kept exactly: every link key (a runner with its overlay; `direct_peers` only in
direct mode, so hub mode's report is unchanged), `{"error": ...}` alone
(it could not read its links) and `{}` (nothing to report: no overlay data plane).

Each direct pair travels as a short array, not an object: a runner of a 255-runner cluster
reports 254 pairs in every heartbeat, and objects with their keys took 47 KB, three times the
bound a heartbeat's `observed` has. The heartbeat's form leaves out what changes on every probe
round (the probe's time, counts above the switch threshold), so a round that switches nothing
sends the same report and the host writes only a time; the runner's own record keeps the
detail (`to_wire(detail=True)`), for its `node overlay` and `doctor`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import TypeVar

from krnet.core.model.peers import SWITCH_AFTER, PeerPath

T = TypeVar("T")
UNLISTED = ("error", "direct_peers")  # the error travels alone; peers only when there are some


@dataclass(frozen=True)
class RunnerReport:
    """One heartbeat's view of `vxlan0`, the bridge and Docker on the runner (None: not said)."""

    tunnel_present: bool | None = None
    vni: int | None = None
    remote: str | None = None  # the tunnel's far end: an address of the host
    local: str | None = None  # the tunnel's own end: the runner's physical address
    port: int | None = None
    mtu: int | None = None
    bridge_mtu: int | None = None
    bridge_addresses: tuple[str, ...] = ()
    tunnel_up: bool | None = None
    docker_available: bool | None = None
    docker_error: str | None = None
    network: str | None = None  # the Docker network its containers should use
    direct_peers: tuple[PeerPath, ...] = ()  # direct mode only: each pair's path
    error: str | None = None  # the runner could not read its links; nothing else is said

    @classmethod
    def failed(cls, error: str) -> RunnerReport:
        """The report of a runner that could not read its links."""
        return cls(error=error)

    @property
    def empty(self) -> bool:
        """Whether the report says nothing (a runner without an overlay data plane)."""
        return self == RunnerReport()

    def to_wire(self, *, detail: bool = False) -> dict[str, object]:
        """The heartbeat's `observed` object; with `detail`, each pair's last probe too (the
        runner's own record)."""
        if self.error is not None:
            return {"error": self.error}
        if self.empty:
            return {}
        wire: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in UNLISTED
        }
        wire["bridge_addresses"] = list(self.bridge_addresses)
        if self.direct_peers:  # hub mode's report stays exactly what it was
            wire["direct_peers"] = [pair_to_wire(pair, detail=detail) for pair in self.direct_peers]
        return wire

    @classmethod
    def from_wire(cls, observed: Mapping[str, object]) -> RunnerReport:
        """The report in a stored or received `observed`; a value of the wrong type is unsaid."""
        addresses = observed.get("bridge_addresses")
        listed = addresses if isinstance(addresses, list | tuple) else ()
        return cls(
            tunnel_present=_of(bool, observed.get("tunnel_present")),
            vni=_int(observed.get("vni")),
            remote=_of(str, observed.get("remote")),
            local=_of(str, observed.get("local")),
            port=_int(observed.get("port")),
            mtu=_int(observed.get("mtu")),
            bridge_mtu=_int(observed.get("bridge_mtu")),
            bridge_addresses=tuple(item for item in listed if isinstance(item, str)),
            tunnel_up=_of(bool, observed.get("tunnel_up")),
            docker_available=_of(bool, observed.get("docker_available")),
            docker_error=_of(str, observed.get("docker_error")),
            network=_of(str, observed.get("network")),
            direct_peers=_peers(observed.get("direct_peers")),
            error=_of(str, observed.get("error")) or None,
        )


def pair_to_wire(pair: PeerPath, *, detail: bool) -> list[object]:
    """`[runner_id, physical_ip, path, since, failures, successes]`, the times in whole epoch
    seconds and the counts capped at the switch threshold; `detail` adds `last_probe` (epoch
    seconds) and `last_probe_ok`."""
    wire: list[object] = [
        pair.runner_id,
        pair.physical_ip,
        pair.path,
        int(pair.since.timestamp()),
        min(pair.failures, SWITCH_AFTER),
        min(pair.successes, SWITCH_AFTER),
    ]
    if detail:
        probed = pair.last_probe
        wire += [None if probed is None else round(probed.timestamp(), 3), pair.last_probe_ok]
    return wire


def pair_from_wire(value: object) -> PeerPath:
    """The pair `pair_to_wire` wrote; ValueError when `value` is not one."""
    if not isinstance(value, list) or len(value) not in (6, 8):
        raise ValueError(f"a direct pair is a list of 6 or 8 values, not {value!r:.60}")
    runner_id, physical_ip, path, since, failures, successes, *probe = value
    probed, probe_ok = probe or (None, None)
    if any(_int(number) is None for number in (runner_id, since, failures, successes)):
        raise ValueError(f"a direct pair's id, since and counts are whole numbers: {value!r:.60}")
    if not isinstance(physical_ip, str) or path not in ("direct", "hub"):
        raise ValueError(
            f"a direct pair's address is a string, its path direct or hub: {value!r:.60}"
        )
    if not isinstance(probed, int | float | None) or not isinstance(probe_ok, bool | None):
        raise ValueError(f"a direct pair's last probe is a time and a flag: {value!r:.60}")
    return PeerPath(
        runner_id,
        physical_ip,
        path,
        _time(since),
        None if probed is None else _time(probed),
        probe_ok,
        failures,
        successes,
    )


def _peers(value: object) -> tuple[PeerPath, ...]:
    """The reported pairs; a malformed list is unsaid, like any other wrong value."""
    if not isinstance(value, list):
        return ()
    try:
        return tuple(pair_from_wire(item) for item in value)
    except (ValueError, OverflowError, OSError):
        return ()


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _of(kind: type[T], value: object) -> T | None:
    return value if isinstance(value, kind) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
