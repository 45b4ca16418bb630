"""The hub's data-path probe: DF ICMP echoes through each tunnel, and rolling results per runner.

Every few seconds the host sends, through each `vxkrN`, one echo at the full overlay MTU with
DF set and one small echo to the runner's gateway. Full-size lost but small passing is an MTU
black hole; both lost is a blocked VXLAN port (or a runner that is down). `ProbeBook` is the
pure bookkeeping; `send_probes` is the thin sending side (raw ICMP sockets, root only, one
socket per tunnel bound to it, all in flight at once so 255 tunnels take one timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from krnet.core.model.codec import decode, encode
from krnet.core.model.node_state import ProbeResult
from krnet.core.model.plan import OverlayPlan, tunnel_name
from krnet.errors import KernelError

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
IP_AND_ICMP_HEADERS = 28  # an echo of N payload bytes is an N + 28 byte IP packet
SMALL_PAYLOAD = 56  # ping's default
IP_MTU_DISCOVER = 10  # <linux/in.h>; the socket module does not export it
IP_PMTUDISC_DO = 2  # set DF, never fragment locally
FULL, SMALL = 0, 1  # the echo sequence number says which probe a reply answers
DEFAULT_WINDOW = 10
RESULTS_FILE = "probes.json"  # in the data dir: the host service writes it, doctor and TUI read


@dataclass(frozen=True)
class ProbeTarget:
    """Where one runner's probe goes: out of its tunnel, to its gateway."""

    runner_id: int
    interface: str
    gateway: str


@dataclass(frozen=True)
class ProbeOutcome:
    """One round for one runner: RTT in ms of each echo, None when it was lost."""

    runner_id: int
    full_rtt_ms: float | None
    small_rtt_ms: float | None


class ProbeBook:
    """The last `window` rounds per runner, summarised as ProbeResult (loss, RTT, last success)."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._rounds: dict[int, deque[ProbeOutcome]] = {}
        self._last_success: dict[int, datetime] = {}

    def record(self, outcome: ProbeOutcome, at: datetime) -> None:
        rounds = self._rounds.setdefault(outcome.runner_id, deque(maxlen=self.window))
        rounds.append(outcome)
        if outcome.full_rtt_ms is not None:
            self._last_success[outcome.runner_id] = at

    def record_all(self, outcomes: Iterable[ProbeOutcome], at: datetime) -> None:
        for outcome in outcomes:
            self.record(outcome, at)

    def runner_ids(self) -> list[int]:
        return list(self._rounds)

    def forget(self, runner_id: int) -> None:
        """Drop a runner's history (its id left or was reclaimed)."""
        self._rounds.pop(runner_id, None)
        self._last_success.pop(runner_id, None)

    def result(self, runner_id: int) -> ProbeResult | None:
        rounds = self._rounds.get(runner_id)
        if not rounds:
            return None
        full = [r.full_rtt_ms for r in rounds if r.full_rtt_ms is not None]
        small = [r.small_rtt_ms for r in rounds if r.small_rtt_ms is not None]
        return ProbeResult(
            runner_id=runner_id,
            sent=len(rounds),
            received=len(full),
            rtt_ms=round(sum(full) / len(full), 3) if full else None,
            last_success=self._last_success.get(runner_id),
            small_sent=len(rounds),
            small_received=len(small),
        )

    def results(self) -> dict[int, ProbeResult]:
        found = {runner_id: self.result(runner_id) for runner_id in sorted(self._rounds)}
        return {runner_id: result for runner_id, result in found.items() if result is not None}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(identifier: int, sequence: int, payload_size: int) -> bytes:
    """An ICMP echo request with a payload of `payload_size` bytes."""
    payload = bytes(i & 0xFF for i in range(payload_size))
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, identifier, sequence)
    return (
        struct.pack(
            "!BBHHH", ICMP_ECHO_REQUEST, 0, checksum(header + payload), identifier, sequence
        )
        + payload
    )


def parse_echo_reply(packet: bytes) -> tuple[str, int, int] | None:
    """(source, identifier, sequence) of an IPv4 packet holding an echo reply, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    icmp = packet[header_length : header_length + 8]
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REPLY:
        return None
    _type, _code, _sum, identifier, sequence = struct.unpack("!BBHHH", icmp)
    return socket.inet_ntoa(packet[12:16]), identifier, sequence


def payload_sizes(mtu: int) -> dict[int, int]:
    """Echo payload per probe kind: the full overlay MTU (mtu - 28) and a small one."""
    return {FULL: mtu - IP_AND_ICMP_HEADERS, SMALL: SMALL_PAYLOAD}


def send_probes(
    targets: Sequence[ProbeTarget], mtu: int, timeout: float = 1.0
) -> list[ProbeOutcome]:
    """One round: a full-size and a small DF echo through every target's tunnel at once."""
    identifier = os.getpid() & 0xFFFF
    sockets: dict[int, tuple[socket.socket, ProbeTarget]] = {}
    sent_at: dict[tuple[int, int], float] = {}
    rtts: dict[tuple[int, int], float] = {}
    try:
        for target in targets:
            sock = _open_socket(target.interface)
            sockets[sock.fileno()] = (sock, target)
            for kind, size in payload_sizes(mtu).items():
                sent_at[(target.runner_id, kind)] = time.monotonic()
                # EMSGSIZE: this end's own MTU is already too small; the echo counts as lost
                with contextlib.suppress(OSError):
                    sock.sendto(echo_request(identifier, kind, size), (target.gateway, 0))
        _collect(sockets, identifier, sent_at, rtts, time.monotonic() + timeout)
    finally:
        for sock, _target in sockets.values():
            sock.close()
    return [
        ProbeOutcome(t.runner_id, rtts.get((t.runner_id, FULL)), rtts.get((t.runner_id, SMALL)))
        for t in targets
    ]


def _open_socket(interface: str) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError as exc:
        raise KernelError("the DF probe needs a raw ICMP socket: run krnet as root") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    except OSError as exc:
        sock.close()
        raise KernelError(f"cannot probe through {interface}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _collect(
    sockets: dict[int, tuple[socket.socket, ProbeTarget]],
    identifier: int,
    sent_at: dict[tuple[int, int], float],
    rtts: dict[tuple[int, int], float],
    deadline: float,
) -> None:
    """Read replies until every echo is answered or the deadline passes."""
    while len(rtts) < len(sent_at) and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(list(sockets), [], [], left)
        now = time.monotonic()
        for fd in readable:
            sock, target = sockets[fd]
            try:
                packet = sock.recv(65535)
            except BlockingIOError:
                continue
            reply = parse_echo_reply(packet)
            if reply is None or reply[0] != target.gateway or reply[1] != identifier:
                continue
            key = (target.runner_id, reply[2])
            if key in sent_at and key not in rtts:
                rtts[key] = round((now - sent_at[key]) * 1000, 3)


def probe_targets(plan: OverlayPlan, runner_ids: Iterable[int]) -> list[ProbeTarget]:
    """Each runner's probe: out of its `vxkrN`, to its gateway."""
    return [
        ProbeTarget(rid, tunnel_name(rid), str(plan.runner(rid).gateway))
        for rid in sorted(runner_ids)
        if 1 <= rid <= plan.max_runners
    ]


def write_results(path: Path, results: Mapping[int, ProbeResult], at: datetime) -> None:
    """Publish the host service's results for `krnet doctor` and the TUI (atomic replace)."""
    data = {"written_at": at.isoformat(), "results": encode(dict(results))}
    # mkstemp: a fresh O_EXCL name beside the results, never a fixed `.tmp` a symlink can hold
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), 0o644)  # read by `node overlay` and the TUI as any user
            stream.write(json.dumps(data))
        os.replace(name, path)
    except BaseException:
        os.unlink(name)
        raise


def read_results(path: Path, now: datetime, max_age: float) -> dict[int, ProbeResult]:
    """The published results, or {} when there are none or they are older than `max_age` s."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written_at = datetime.fromisoformat(data["written_at"])
        results = decode(dict[int, ProbeResult], data["results"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return results if (now - written_at).total_seconds() <= max_age else {}
