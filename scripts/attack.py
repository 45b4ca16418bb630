"""The attack campaign: a real `krnet serve` host flooded, fuzzed, and measured while it serves.

The host runs in its own process with its default limits (max_connections 1024,
handshake_timeout 10 s; the overlay disabled, so no root is needed); everything else runs in
this process over loopback. Prints, per phase: join latency with and without 1,000 slow
connections held open, `busy` refusals past the limit, how long the slow connections are
held, the host's resident memory before, during and after, and the fuzzer's throughput and
outcomes, then checks that the record changed only by the real joins. Then two attacks by a
member that holds the cluster token: identity theft (read the identities from the status,
join as a live runner from another address) and an impostor host (answer a runner's join with
a hostile allocation signed by the token).

    .venv/bin/python scripts/attack.py [--flood 1000] [--joins 50] [--fuzz-examples 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from krnet.core.control.planes import NullRunnerDataPlane  # noqa: E402
from krnet.core.protocol.messages import Welcome  # noqa: E402
from krnet.errors import ProtocolError  # noqa: E402
from tests.attack.hostile import (  # noqa: E402
    CASES,
    HostProcess,
    RawBytes,
    Session,
    SignedFirst,
    flood,
    host_process,
    open_slow,
    run_case,
    runners_by_id,
)
from tests.protocol.peers import TOKEN, connect, fake_host, join_fields, join_once  # noqa: E402
from tests.protocol.test_member_attacks import (  # noqa: E402
    HOSTILE,
    agent_for,
    everything_a_status_client_reads,
)


def lift_open_files() -> int:
    """This process needs a socket per slow connection: soft limit up to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(hard)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def latencies_line(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"{name:28} {len(ordered):4d} joins   p50 {statistics.median(ordered) * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


async def timed_joins(port: int, count: int, first_address: int) -> list[float]:
    """`count` real runners joining one after another; seconds from connect to verified welcome."""
    seconds = []
    for index in range(count):
        started = time.perf_counter()
        hostname, physical_ip = f"r{uuid.uuid4().hex[:8]}", address(first_address + index)
        await join_once(port, hostname=hostname, physical_ip=physical_ip)
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return seconds


def address(index: int) -> str:
    """A distinct underlay address per simulated runner (documentation ranges)."""
    return f"198.51.100.{index + 1}" if index < 250 else f"203.0.113.{index - 249}"


async def flood_phase(host: HostProcess, count: int, joins: int) -> None:
    rss_idle = host.rss_kib()
    baseline = await timed_joins(host.port, joins, 0)
    print(latencies_line("joins, idle host", baseline))

    started = time.perf_counter()
    slow = await flood(host.port, count)
    opened = time.perf_counter() - started
    print(f"{count} slow connections (silent, a byte a second, half a line) open in {opened:.2f} s")
    under_flood = await timed_joins(host.port, joins, 100)
    print(latencies_line(f"joins, {count} slow held", under_flood))

    fill = []
    while (client := await open_slow(host.port, "silent")).first["type"] == "hello":
        fill.append(client)
    extra = [client, *[await open_slow(host.port, "silent") for _ in range(99)]]
    busy = sum(client.first.get("code") == "busy" for client in extra)
    print(f"connections held at the limit: {count + len(fill)}; next 100: {busy} told busy")
    rss_flood = host.rss_kib()
    for client in fill + extra:
        await client.close()

    endings: Counter[str] = Counter()
    for client in slow:
        try:
            lines = await client.rest(timeout=120)
        except ConnectionResetError:
            lines = [{"code": "reset"}]
        endings[" ".join(line["code"] for line in lines) or "closed"] += 1
        await client.close()
    held = time.perf_counter() - started
    print(f"all {count} dropped by the host {held:.1f} s after the flood began: {dict(endings)}")
    await asyncio.sleep(1)
    rss_after = host.rss_kib()
    print(
        f"host RSS: idle {mib(rss_idle)}, {count} slow held {mib(rss_flood)}, "
        f"after {mib(rss_after)}"
    )


def fuzz_phase(host: HostProcess, examples: int) -> None:
    before = runners_by_id(host.overlay())
    welcomed: dict[int, tuple[str, str, int, str]] = {}
    kinds: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    acks = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(CASES)
    def attack(case: RawBytes | SignedFirst | Session) -> None:
        nonlocal acks
        outcome = run_case(host.port, case)
        welcomed.update(outcome.welcomed)
        kinds[type(case).__name__] += 1
        codes.update(outcome.codes)
        acks += outcome.acks

    started = time.perf_counter()
    attack()
    elapsed = time.perf_counter() - started
    total = sum(kinds.values())
    print(f"fuzzer: {total} cases in {elapsed:.1f} s ({total / elapsed:.0f}/s): {dict(kinds)}")
    print(f"  refusals by code: {dict(codes.most_common())}; heartbeats acknowledged: {acks}")
    final = asyncio.run(join_once(host.port, hostname="after-the-fuzz"))
    after = runners_by_id(host.overlay())
    real = {final.runner_id: ("after-the-fuzz", "127.0.0.1", final.vni, final.subnet)}
    same = after == before | welcomed | real
    print(
        f"  host alive: {host.alive()}; record changed only by real joins: {same} "
        f"({len(before)} runners before, {len(after)} after)"
    )


async def identity_theft_phase(host: HostProcess, data_dir: Path) -> None:
    """A live runner; a member reads the status and joins as it from 203.0.113.66."""
    victim = agent_for(host.port, data_dir / "victim", NullRunnerDataPlane())
    task = asyncio.create_task(victim.run())
    try:
        while not any(r["hostname"] == victim.hostname for r in host.overlay()["runners"]):
            await asyncio.sleep(0.2)
        seen = await everything_a_status_client_reads(host.port)
        thief = await connect(host.port)
        try:
            await thief.send_first(
                "join", join_fields(victim.identity, victim.hostname, "203.0.113.66")
            )
            try:
                outcome = f"welcomed as runner {(await thief.receive(Welcome)).runner_id}"
            except ProtocolError as exc:
                outcome = f"refused ({exc.code})"
        finally:
            await thief.close()
        [record] = [r for r in host.overlay()["runners"] if r["hostname"] == victim.hostname]
    finally:
        victim.stop()
        await asyncio.wait_for(task, 10)
    print(
        f"identity theft: identity in the status answers: {victim.identity.encode() in seen}; "
        f"join as the victim: {outcome}; victim's tunnel address {record['physical_ip']}"
    )


async def impostor_host_phase(data_dir: Path) -> None:
    """A member answers a new runner's join with overlay 0.0.0.0/0 and bridge wg0."""
    seen: list[dict[str, object]] = []
    server = await asyncio.start_server(fake_host(seen, HOSTILE, TOKEN), "127.0.0.1", 0)
    dataplane = NullRunnerDataPlane()
    agent = agent_for(server.sockets[0].getsockname()[1], data_dir / "runner", dataplane)
    task = asyncio.create_task(agent.run())
    while len(seen) < 2:
        await asyncio.sleep(0.1)
    agent.stop()
    await asyncio.wait_for(task, 10)
    server.close()
    applied = sum(name == "apply" for name, _ in dataplane.calls)
    print(f"impostor host: {len(seen)} joins answered with a hostile welcome; applied {applied}")


def main(arguments: argparse.Namespace) -> None:
    hard = lift_open_files()
    with tempfile.TemporaryDirectory(prefix="krt-attack-") as directory:
        with host_process(Path(directory)) as host:
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"krnet attack campaign: load {load}, open-files limit {hard}, loopback")
            asyncio.run(flood_phase(host, arguments.flood, arguments.joins))
            fuzz_phase(host, arguments.fuzz_examples)
            asyncio.run(identity_theft_phase(host, Path(directory)))
            asyncio.run(impostor_host_phase(Path(directory)))
            rss = host.rss_kib()
        log = host.log
        tracebacks = log.count("Traceback")
        print(
            f"host exit {host.process.returncode}; final RSS {mib(rss)}; log {len(log) // 1024} "
            f"KiB, {len(host.log_lines)} lines, {tracebacks} tracebacks"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=1000, help="slow connections (default 1000)")
    parser.add_argument("--joins", type=int, default=50, help="timed joins per phase (default 50)")
    parser.add_argument("--fuzz-examples", type=int, default=3000, help="default 3000")
    main(parser.parse_args())
