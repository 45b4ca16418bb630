"""Simulated runners: asyncio clients that join a real host over the real protocol.

bench/join.py imports `join` (loopback, in its own process). bench/scale.py runs this file
inside a lab namespace: it joins all runners at once on a "go" line from stdin, prints one
JSON line of results once all have their answer (each heartbeats like the agent from its own
welcome on); it prints the heartbeats answered so far on each "count" line, and on "stop"
closes every connection and prints the count and the connections lost. Against a host in
direct mode each also follows the peer table (its welcome's, then every `peers` push): a
"seen ID" line prints, for every runner, the monotonic time it last read a table that newly
held runner ID and the time it last read one that newly lacked it (bench/convergence.py).

    BENCH_TOKEN=... python bench/simrunner.py --host 192.0.2.1 --port 8470 ADDRESS...

Each ADDRESS is one runner's claimed `physical_ip` (all connect from this namespace's own
address; the host notes the difference and builds each tunnel to the claimed address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from krnet.core.protocol.channel import mac_key
from krnet.core.protocol.client import HostConnection
from krnet.core.protocol.messages import HeartbeatAck, PeerEntry, Peers, Welcome, applied_of

MUST_MATCH = {"vxlan_id": 100, "vxlan_port": 4789, "mtu": 1450}  # the host's defaults


@dataclass(frozen=True)
class SimRunner:
    """Who a simulated runner says it is in its `join`."""

    identity: str
    hostname: str
    physical_ip: str
    runner_key: str | None = None  # the key an earlier enrolment gave it, if any


async def join(
    host: str, port: int, token: str, runner: SimRunner, timeout: float = 120.0
) -> tuple[float, HostConnection, Welcome]:
    """One runner's join: seconds from connect to a verified welcome, the open connection
    (keyed by the runner key from then on, as the agent's; a new key is in the welcome)."""
    started = time.perf_counter()
    key = mac_key(token, runner.runner_key)
    connection = await HostConnection.open(host, port, key, timeout=timeout)
    try:
        fields = {
            "identity": runner.identity,
            "hostname": runner.hostname,
            "physical_ip": runner.physical_ip,
        }
        await connection.send_first("join", fields | MUST_MATCH)
        welcome = await connection.receive(Welcome)
        if welcome.runner_key is not None:
            connection.channel.enrol(token, welcome.runner_key)
    except BaseException:
        await connection.close()
        raise
    return time.perf_counter() - started, connection, welcome


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))]


@dataclass
class Tally:
    """Heartbeats answered so far, by all runners."""

    answered: int = 0


@dataclass
class PeerBook:
    """When this runner's table last gained and last lost each runner id (monotonic seconds,
    the clock every process on the machine shares), stamped as each table is read."""

    held: frozenset[int] = frozenset()
    appeared: dict[int, float] = field(default_factory=dict)
    gone: dict[int, float] = field(default_factory=dict)

    def read(self, peers: list[PeerEntry] | None) -> None:
        now = time.monotonic()
        ids = frozenset(peer.runner_id for peer in peers or ())
        self.appeared.update(dict.fromkeys(ids - self.held, now))
        self.gone.update(dict.fromkeys(self.held - ids, now))
        self.held = ids


async def heartbeats(
    connection: HostConnection,
    welcome: Welcome,
    stop: asyncio.Event,
    tally: Tally,
    book: PeerBook,
) -> None:
    """Heartbeat like the agent (applied allocation, nothing observed) until `stop`; a reader
    counts the answers and follows the pushed peer tables meanwhile."""
    applied = applied_of(welcome.allocation()).model_dump()
    book.read(welcome.peers)
    reader = asyncio.create_task(read_host(connection, tally, book))
    try:
        while not reader.done():
            try:
                await asyncio.wait_for(stop.wait(), welcome.heartbeat_interval)
                return
            except asyncio.TimeoutError:
                pass
            await connection.send({"type": "heartbeat", "applied": applied, "observed": {}})
        reader.result()  # the connection failed: raise why
    finally:
        reader.cancel()


async def read_host(connection: HostConnection, tally: Tally, book: PeerBook) -> None:
    """The host's answers and pushes, as the agent's HostReader reads them."""
    while True:
        message = await connection.receive_one_of((HeartbeatAck, Peers), 3600.0)
        if isinstance(message, Peers):
            book.read(message.peers)
        else:
            tally.answered += 1


async def life(
    host: str,
    port: int,
    token: str,
    runner: SimRunner,
    welcomed: asyncio.Future[tuple[float, int, str]],
    stop: asyncio.Event,
    tally: Tally,
    book: PeerBook,
) -> None:
    """Join, then heartbeat from the welcome on, as the agent does."""
    try:
        latency, connection, welcome = await join(host, port, token, runner)
    except Exception as exc:
        welcomed.set_exception(exc)
        return
    welcomed.set_result((latency, welcome.runner_id, runner.physical_ip))
    try:
        await heartbeats(connection, welcome, stop, tally, book)
    finally:
        await connection.close()


async def fleet(host: str, port: int, token: str, addresses: list[str]) -> None:
    """The lab side for bench/scale.py and bench/convergence.py: ready, go, results, then
    heartbeat counts on "count" and peer-table times on "seen ID", until "stop"."""
    runners = [SimRunner(uuid.uuid4().hex, f"sim-{i}", a) for i, a in enumerate(addresses, 1)]
    loop = asyncio.get_running_loop()
    welcomed = [loop.create_future() for _ in runners]
    stop = asyncio.Event()
    tally = Tally()
    books = [PeerBook() for _ in runners]
    emit({"ready": True})
    await asyncio.to_thread(sys.stdin.readline)
    started = time.perf_counter()
    lives = [
        asyncio.create_task(life(host, port, token, runner, future, stop, tally, book))
        for runner, future, book in zip(runners, welcomed, books, strict=True)
    ]
    outcomes = await asyncio.gather(*welcomed, return_exceptions=True)
    wall = time.perf_counter() - started
    joined = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    emit(
        {
            "wall": wall,
            "latencies": sorted(latency for latency, _, _ in joined),
            "ids": sorted((runner_id, address) for _, runner_id, address in joined),
            "errors": [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)],
        }
    )
    while (command := (await asyncio.to_thread(sys.stdin.readline)).split())[:1] != ["stop"]:
        if command == ["count"]:
            emit({"heartbeats": tally.answered})
        elif command[:1] == ["seen"] and len(command) == 2:
            watched = int(command[1])
            appeared = [book.appeared.get(watched) for book in books]
            emit({"appeared": appeared, "gone": [book.gone.get(watched) for book in books]})
        else:
            break  # stdin closed, or a line this file does not speak: stop as on "stop"
    stop.set()
    ends = await asyncio.gather(*lives, return_exceptions=True)
    failed = [repr(end) for end in ends if isinstance(end, BaseException)]
    emit({"heartbeats": tally.answered, "heartbeat_errors": failed})


def emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8470)
    parser.add_argument("addresses", nargs="+", metavar="ADDRESS")
    arguments = parser.parse_args()
    token = os.environ["BENCH_TOKEN"]
    asyncio.run(fleet(arguments.host, arguments.port, token, arguments.addresses))
