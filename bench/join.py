"""Join throughput and latency: N simulated runners join a real `krnet serve` host at once.

The host is a separate process (`python -m krnet serve`, overlay disabled so no root is needed
and the null data plane stands in for the kernel); runners are asyncio clients in this process
speaking the real protocol over loopback. Two rounds: first joins (new ids), then the same
runners again (returning ids). Prints joins per second and p50/p99 latency (connect to
verified welcome) per round.

    .venv/bin/python bench/join.py [--runners N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simrunner import SimRunner, join, percentile  # noqa: E402

from krnet.core.protocol.token import token_path, write_token  # noqa: E402

TOKEN = uuid.uuid4().hex * 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_host(directory: Path, port: int) -> subprocess.Popen[bytes]:
    config = directory / "krnet.toml"
    config.write_text(
        f'mode = "host"\njoin_bind = "127.0.0.1"\njoin_port = {port}\noverlay_enabled = false\n'
    )
    write_token(token_path(directory / "data"), TOKEN)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KRNET_")}
    environ |= {"HOME": str(directory), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "krnet", "-q", "--config", str(config)]
    return subprocess.Popen([*command, "--data-dir", str(directory / "data"), "serve"], env=environ)


async def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the host exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def join_once(port: int, identity: str, index: int) -> float:
    """One runner's join; seconds from connect to a verified welcome."""
    runner = SimRunner(identity, f"bench-{index}", "127.0.0.1")
    elapsed, connection, _ = await join("127.0.0.1", port, TOKEN, runner)
    await connection.close()
    return elapsed


async def round_of_joins(port: int, identities: list[str]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    latencies = await asyncio.gather(
        *(join_once(port, identity, index) for index, identity in enumerate(identities))
    )
    return time.perf_counter() - started, sorted(latencies)


def report(name: str, wall: float, latencies: list[float]) -> None:
    print(
        f"{name:10} {len(latencies):4d} joins in {wall:6.3f} s = {len(latencies) / wall:7.1f} "
        f"joins/s   latency p50 {percentile(latencies, 0.5) * 1000:7.1f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(latencies) * 1000:7.1f} ms"
    )


async def main(runners: int) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="krt-bench-") as directory:
        host = start_host(Path(directory), port)
        try:
            await wait_listening(port, host)
            identities = [uuid.uuid4().hex for _ in range(runners)]
            print(f"krnet join benchmark: {runners} runners, {os.cpu_count()} CPUs, loopback")
            report("first", *await round_of_joins(port, identities))
            report("returning", *await round_of_joins(port, identities))
        finally:
            host.send_signal(signal.SIGTERM)
            host.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=255, help="1..255 (default 255)")
    arguments = parser.parse_args()
    if not 1 <= arguments.runners <= 255:
        parser.error("--runners must be from 1 to 255 (the id pool)")
    asyncio.run(main(arguments.runners))
