"""The probe's pure parts: echo packets on the wire, and the rolling book per runner."""

from __future__ import annotations

import socket
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

from krnet.core.dataplane.probe import (
    FULL,
    SMALL,
    ProbeBook,
    ProbeOutcome,
    ProbeTarget,
    checksum,
    echo_request,
    parse_echo_reply,
    payload_sizes,
    probe_targets,
    read_results,
    write_results,
)
from krnet.core.model.settings import Settings

T0 = datetime(2026, 11, 28, tzinfo=timezone.utc)


def test_echo_request_is_a_valid_icmp_packet_of_the_asked_size() -> None:
    packet = echo_request(0x1234, 1, 1422)
    assert len(packet) == 8 + 1422
    assert checksum(packet) == 0  # a correct checksum sums to zero
    assert struct.unpack("!BBHHH", packet[:8])[0::3] == (8, 0x1234)


def test_full_probe_fills_the_overlay_mtu_exactly() -> None:
    sizes = payload_sizes(1450)
    assert sizes[FULL] + 28 == 1450 and sizes[SMALL] == 56


def test_checksum_known_value() -> None:
    # RFC 1071's worked example: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def _reply(source: str, identifier: int, sequence: int, kind: int = 0) -> bytes:
    icmp = struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + b"x" * 8
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        0,
        0,
        64,
        1,
        0,
        socket.inet_aton(source),
        socket.inet_aton("10.1.0.254"),
    )
    return ip + icmp


def test_parse_echo_reply() -> None:
    assert parse_echo_reply(_reply("10.1.0.1", 7, SMALL)) == ("10.1.0.1", 7, SMALL)
    assert parse_echo_reply(_reply("10.1.0.1", 7, 0, kind=8)) is None  # a request
    assert parse_echo_reply(b"\x45\x00") is None


def test_book_counts_loss_rtt_and_last_success() -> None:
    book = ProbeBook(window=4)
    book.record(ProbeOutcome(1, 0.5, 0.2), T0)
    book.record(ProbeOutcome(1, None, 0.2), T0 + timedelta(seconds=5))
    book.record(ProbeOutcome(1, 1.5, None), T0 + timedelta(seconds=10))
    book.record(ProbeOutcome(1, None, None), T0 + timedelta(seconds=15))
    result = book.result(1)
    assert result is not None
    assert (result.sent, result.received, result.small_sent, result.small_received) == (4, 2, 4, 2)
    assert result.rtt_ms == 1.0 and result.loss == 0.5 and result.small_loss == 0.5
    assert result.last_success == T0 + timedelta(seconds=10)


def test_book_window_forgets_old_rounds_and_runners() -> None:
    book = ProbeBook(window=2)
    book.record_all([ProbeOutcome(1, None, None), ProbeOutcome(2, 0.3, 0.1)], T0)
    book.record_all([ProbeOutcome(1, 0.4, 0.1)] * 2, T0 + timedelta(seconds=5))
    results = book.results()
    assert results[1].loss == 0.0 and results[1].sent == 2
    book.forget(2)
    assert set(book.results()) == {1} and book.result(2) is None


def test_black_hole_signature() -> None:
    book = ProbeBook()
    book.record_all([ProbeOutcome(3, None, 0.2)] * 3, T0)
    result = book.results()[3]
    assert result.loss == 1.0 and result.small_loss == 0.0 and result.last_success is None


def test_targets_follow_the_plan() -> None:
    plan = Settings().plan()
    targets = probe_targets(plan, [10, 1, 999])
    assert targets == [ProbeTarget(1, "vxkr1", "10.1.0.1"), ProbeTarget(10, "vxkr10", "10.10.0.1")]


def test_results_file_round_trip_and_staleness(tmp_path: Path) -> None:
    book = ProbeBook()
    book.record(ProbeOutcome(2, 0.5, 0.1), T0)
    path = tmp_path / "probes.json"
    write_results(path, book.results(), T0)
    assert read_results(path, T0 + timedelta(seconds=10), max_age=15) == book.results()
    assert read_results(path, T0 + timedelta(seconds=20), max_age=15) == {}
    assert read_results(tmp_path / "missing.json", T0, max_age=15) == {}
