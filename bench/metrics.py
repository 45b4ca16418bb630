"""Metrics under load: a host with 255 heartbeating runners, scraped many times a second.

The ground is bench/scalelab.py's (the real `krnet serve` host in a lab namespace, overlay on,
real tunnels, rules and port guard; bench/simrunner.py's runners joining over the real
protocol from a second namespace, 32 joining at a time), with `metrics_bind` set on the host.
In one run, one after the other, each --hold seconds while every runner heartbeats at the
default interval:
  1. quiet: nobody scrapes (the baseline);
  2. scraped: a client in the runners' namespace GETs /metrics --rate times a second;
  3. /readyz at the same rate.
For each window: the serve process's CPU (its threads, and its exited children: the
iptables-save of each snapshot) from /proc/PID/stat, heartbeats answered per second; for 2
and 3 the request latency (p50 / p95 / max) and the CPU per request beyond the quiet window.
Figures only, never assertions. Bounded by --budget; everything is torn down on exit.

    sudo .venv/bin/python bench/metrics.py [--runners 255] [--rate 10] [--hold 20] [--budget 600]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from scale import Usage, usage  # noqa: E402
from scalelab import HOST_UNDERLAY, Fleet, ScaleLab, child_env, claimed_address  # noqa: E402

from krnet.lab.prerequisites import missing_prerequisites  # noqa: E402

REQUIRED = ("ip", "nsenter", "unshare", "iptables", "iptables-save", "nft")
PORT = 9470
BATCH = 32  # runners joining at once: on a loaded machine 255 at once outlast the join timeout
# the scraper, run in the runners' namespace: GET url `rate` times a second for `seconds`
SCRAPER = """
import json, sys, time, urllib.request
url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
latencies, sizes, errors = [], [], []
start = time.perf_counter()
n = 0
while (now := time.perf_counter()) - start < seconds:
    due = start + n / rate
    if due > now:
        time.sleep(due - now)
    n += 1
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            sizes.append(len(answer.read()))
    except Exception as exc:
        errors.append(repr(exc))
        continue
    latencies.append(time.perf_counter() - began)
print(json.dumps({"latencies": sorted(latencies), "sizes": sizes, "errors": errors[:3],
                  "failed": len(errors)}))
"""


@dataclass
class Window:
    """One window of --hold seconds: CPU of the serve process, heartbeats, requests."""

    name: str
    seconds: float
    start: Usage
    end: Usage
    heartbeats: int
    latencies: list[float]
    size: int = 0
    failed: int = 0

    @property
    def cpu(self) -> float:
        """Seconds of CPU (threads and exited children) per second of wall time."""
        used = self.end.cpu - self.start.cpu + self.end.children_cpu - self.start.children_cpu
        return used / self.seconds


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))] if values else 0.0


def join_all(lab: ScaleLab, runners: int) -> list[Fleet]:
    """`runners` simulated runners, joined BATCH at a time; all heartbeat until stopped."""
    fleets = []
    for first in range(1, runners + 1, BATCH):
        last = min(runners, first + BATCH - 1)
        addresses = [claimed_address(index) for index in range(first, last + 1)]
        fleet = Fleet(lab.sim, lab.cluster.token, addresses)
        fleets.append(fleet)
        joined = fleet.join()
        if joined.errors:
            raise RuntimeError(f"{len(joined.errors)} joins failed: {joined.errors[0]}")
    return fleets


def heartbeats(fleets: list[Fleet]) -> int:
    return sum(fleet.heartbeats() for fleet in fleets)


def window(
    lab: ScaleLab, fleets: list[Fleet], name: str, hold: float, url: str | None, rate: float
) -> Window:
    beats, start = heartbeats(fleets), usage(lab.pid)
    began = time.perf_counter()
    result: dict[str, object] = {"latencies": [], "sizes": [], "failed": 0}
    if url is None:
        time.sleep(hold)
    else:
        argv = [sys.executable, "-c", SCRAPER, url, str(rate), str(hold)]
        result = json.loads(lab.sim.run(argv, env=child_env()).stdout)
    seconds, end = time.perf_counter() - began, usage(lab.pid)
    sizes = result["sizes"]
    assert isinstance(sizes, list)
    latencies = result["latencies"]
    assert isinstance(latencies, list)
    failed = result["failed"]
    assert isinstance(failed, int)
    return Window(
        name,
        seconds,
        start,
        end,
        heartbeats(fleets) - beats,
        latencies,
        max(sizes, default=0),
        failed,
    )


def report(runners: int, rate: float, windows: list[Window]) -> None:
    quiet = windows[0]
    print(f"metrics under load: {runners} runners heartbeating, requests at {rate:g}/s")
    print(f"load average {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}")
    for w in windows:
        line = (
            f"{w.name:>8}: serve CPU {100 * w.cpu:5.1f} % of a core, "
            f"heartbeats {w.heartbeats / w.seconds:5.1f}/s"
        )
        if w.latencies:
            count = len(w.latencies)
            extra = (w.cpu - quiet.cpu) * w.seconds / count
            line += (
                f", {count} requests ({w.failed} failed), latency p50 "
                f"{1000 * percentile(w.latencies, 0.5):.1f} ms p95 "
                f"{1000 * percentile(w.latencies, 0.95):.1f} ms max {1000 * w.latencies[-1]:.1f} ms"
                f", CPU per request beyond quiet {1000 * extra:.1f} ms, body {w.size} bytes"
            )
        print(line)


class OutOfTime(Exception):
    pass


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.alarm(0)  # one interruption: the teardown that follows must run to its end
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise OutOfTime(f"stopped by signal {signum} (--budget or SIGTERM)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=255)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (10)")
    parser.add_argument("--hold", type=float, default=20.0, help="each window, s (20)")
    parser.add_argument("--budget", type=int, default=600, help="give up after this, s (600)")
    arguments = parser.parse_args()
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"metrics bench: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(arguments.budget)
    base = f"http://{HOST_UNDERLAY}:{PORT}"
    try:
        with (
            tempfile.TemporaryDirectory(prefix="krt-metrics-") as workdir,
            ScaleLab(Path(workdir), progress=lambda m: print(m, file=sys.stderr)) as lab,
        ):
            lab.cluster.write_config(lab.host, metrics_bind=f"{HOST_UNDERLAY}:{PORT}")
            lab.start_host()
            fleets = join_all(lab, arguments.runners)
            time.sleep(5)  # let the first heartbeats and probe round settle
            hold, rate = arguments.hold, arguments.rate
            windows = [
                window(lab, fleets, "quiet", hold, None, rate),
                window(lab, fleets, "/metrics", hold, f"{base}/metrics", rate),
                window(lab, fleets, "/readyz", hold, f"{base}/readyz", rate),
            ]
            for fleet in fleets:
                fleet.stop()
    except (OutOfTime, RuntimeError, TimeoutError, OSError) as error:
        print(f"metrics bench: {error}", file=sys.stderr)
        return 1
    report(arguments.runners, arguments.rate, windows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
