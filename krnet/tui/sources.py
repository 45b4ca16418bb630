"""Where the TUI's snapshots come from: this node (`state.gather_snapshot`) or a remote host.

A remote host answers the protocol's authenticated `status` followed by its node `snapshot`,
and the remote view is that whole node. A host whose krnet cannot send one (an older release)
gives a view built from the overlay status object (the record: runners, their probes and
mismatches), and the parts a status does not carry are marked unread so diagnosis skips them
rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from ipaddress import IPv4Interface, IPv4Network
from typing import TYPE_CHECKING, Any

from krnet.config import Settings
from krnet.core.records import UNREPORTED, RunnerRecord
from krnet.core.snapshot import NodeSnapshot, ProbeResult
from krnet.core.snapshot_json import decode
from krnet.tui.model import SnapshotSource

if TYPE_CHECKING:
    from krnet.config import LoadedSettings

REMOTE_UNREAD = (
    "kernel: links and routes are not part of a remote status",
    "firewall: rules are not part of a remote status",
    "sysctl: sysctls are not part of a remote status",
    "settings: only VNI base, port, MTU and the overlay address are part of a remote status",
)


def local_source(loaded: LoadedSettings) -> SnapshotSource:
    """This node, read directly each time (needs root for links, rules and sysctls)."""
    from krnet.core.state import gather_snapshot

    return lambda: gather_snapshot(loaded, events=True)


def remote_source(address: str, loaded: LoadedSettings) -> SnapshotSource:
    """A remote host at HOST[:PORT], through its authenticated `status` and `snapshot`."""
    from krnet.core.client import fetch_remote_snapshot

    def fetch() -> NodeSnapshot:
        status, whole = fetch_remote_snapshot(address, loaded.settings, loaded.data_dir)
        if whole is not None:
            return whole
        return snapshot_from_status(status, datetime.now(timezone.utc), address)

    return fetch


def snapshot_from_status(
    status: Mapping[str, Any], taken_at: datetime, address: str
) -> NodeSnapshot:
    """The record-only NodeSnapshot a remote `status` answer describes."""
    overlay = IPv4Interface(str(status["host_overlay_ip"]))
    entries = list(status.get("runners") or [])
    prefixes = {IPv4Network(str(entry["subnet"])).prefixlen for entry in entries}
    settings = Settings(
        mode=status.get("mode", "host"),
        overlay_enabled=True,
        overlay_host_ip=str(overlay.ip),
        overlay_host_prefix=overlay.network.prefixlen,
        overlay_runner_prefix=prefixes.pop() if len(prefixes) == 1 else 16,
        overlay_vxlan_id=int(status["vxlan_id_base"]),
        overlay_vxlan_port=int(status["vxlan_port"]),
        overlay_mtu=int(status["mtu"]),
    )
    return NodeSnapshot(
        taken_at=taken_at,
        mode=settings.mode,
        settings=settings,
        runners=tuple(_record(entry) for entry in entries),
        probes={p.runner_id: p for p in map(_probe, entries) if p is not None},
        errors=REMOTE_UNREAD,
        hostname=address,
        reported_mismatches={
            int(entry["runner_id"]): tuple(entry["mismatches"])
            for entry in entries
            if entry.get("mismatches")
        },
    )


def _record(entry: Mapping[str, Any]) -> RunnerRecord:
    last_seen = datetime.fromisoformat(str(entry["last_seen"]).replace("Z", "+00:00"))
    return RunnerRecord(
        runner_id=int(entry["runner_id"]),
        identity=None,
        hostname=str(entry["hostname"]),
        physical_ip=str(entry["physical_ip"]),
        vni=int(entry["vni"]),
        subnet=str(entry["subnet"]),
        status=str(entry["status"]),
        first_seen=last_seen,
        last_seen=last_seen,
        vxlan_id=UNREPORTED,
        vxlan_port=UNREPORTED,
        mtu=UNREPORTED,
    )


def _probe(entry: Mapping[str, Any]) -> ProbeResult | None:
    """The entry's `probe` when it is in ProbeResult form; anything else is left out."""
    probe = entry.get("probe")
    if not isinstance(probe, Mapping):
        return None
    try:
        result: ProbeResult = decode(ProbeResult, {"runner_id": entry["runner_id"], **probe})
    except (TypeError, ValueError):
        return None
    return result
