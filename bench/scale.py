"""Scale: N simulated runners join a host in a namespace at once; memory, CPU, restart, status.

The ground (bench/scalelab.py): the real `krnet serve` as host (overlay enabled: real vxkrN
tunnels, routes, iptables and the VXLAN port guard) in a lab namespace at 192.0.2.1, and
bench/simrunner.py's runners speaking the real protocol from a second namespace, each
claiming its own physical_ip (counts above 255 set overlay_runner_prefix = 20 on the host, as
an operator would). For each count of --runners, in the same process (every
figure is printed with the ratio of the largest count to the smallest):
  1. joins: wall time from "go" until every runner has its `welcome` (the host builds the
     tunnel, route, rules and guard entry before it answers), then the kernel is checked;
  2. the serve process (/proc/PID): RSS before and after the joins, peak (VmHWM), CPU time
     during the joins (its own, and its children's: the iptables commands), and CPU over
     --hold seconds while every runner heartbeats at the product's default interval (the
     host's own timers run meanwhile: tunnel probes, liveness, reconcile);
  3. restart (SIGTERM, start): time until the host listens (it reconciles first), and every
     write it made: `ip monitor` events, `nft monitor` changes, changes it recorded; then
     again after deleting the last tunnel by hand (the counters must see that repair);
  4. `krnet node overlay --json` in the host namespace, and with `--connect` from the
     runners' namespace (the authenticated `status`): median wall time of --repeat runs;
  5. the kernel floor (bench/floor.py): the same links, addresses and rules built in a fresh
     namespace by one `ip -batch` and one `iptables-restore --noflush`, and krnet's join
     round against it.
With --profile, the host runs under bench/hostprofile.py and its CPU profile (every thread,
sampled) is printed for the largest count.
Bounded by --budget; everything is torn down on exit, error, Ctrl-C or SIGTERM.

    sudo bench/scale.sh [--runners 10 255] [--repeat 7] [--hold 30] [--budget 600] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from floor import Floor, measure_floor  # noqa: E402
from scalelab import MAX_SIMULATED, Joined, Restart, ScaleLab, Writes  # noqa: E402
from simrunner import percentile  # noqa: E402

from krnet.core.model.settings import Settings  # noqa: E402
from krnet.lab.namespaces import LabError  # noqa: E402
from krnet.lab.prerequisites import missing_prerequisites  # noqa: E402

REQUIRED = ("ip", "nsenter", "unshare", "iptables", "iptables-save", "nft")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
WIDE_PREFIX = 20  # overlay_runner_prefix for more than 255 runners
Say = Callable[[str], None]


@dataclass(frozen=True)
class Usage:
    """The serve process's memory and CPU time so far, from /proc."""

    rss_kib: int
    peak_kib: int
    cpu: float  # utime + stime of all its threads, seconds
    children_cpu: float  # of its children that have exited (iptables, firewall-cmd)


def usage(pid: int) -> Usage:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    # fields after "(comm)": state is field 3, utime..cstime are fields 14..17
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(value) / CLOCK_TICK for value in stat[11:15])
    return Usage(
        rss_kib=int(status["VmRSS"].split()[0]),
        peak_kib=int(status["VmHWM"].split()[0]),
        cpu=utime + stime,
        children_cpu=cutime + cstime,
    )


@dataclass
class Figures:
    """Everything measured for one number of runners."""

    runners: int
    problems: list[str]
    start: float = 0.0
    joined: Joined | None = None
    join_writes: Writes | None = None
    before: Usage | None = None
    after: Usage | None = None
    hold: float = 0.0  # the heartbeat window: its length, usage at each end, heartbeats
    hold_start: Usage | None = None
    hold_end: Usage | None = None
    heartbeats: int = 0
    restart: Restart | None = None
    repair: Restart | None = None
    overlay_local: float = 0.0
    overlay_remote: float = 0.0
    floor: Floor | None = None
    profile: str = ""


def measure(
    runners: int, workdir: Path, repeat: int, hold: float, say: Say, profile: bool = False
) -> Figures:
    """Build the ground, run every measurement for `runners`, tear it all down."""
    figures = Figures(runners, problems=[])
    sampled = workdir / f"profile-{runners}" if profile else None
    settings = lab_settings(runners)
    with ScaleLab(workdir / f"n{runners}", progress=say, settings=settings, profile=sampled) as lab:
        figures.start = lab.start_host()
        serve_pid = lab.pid
        if not lab.host.node.run(["cat", f"/proc/{lab.pid}/comm"]).stdout.startswith("python"):
            raise RuntimeError(f"pid {lab.pid} is not the serve process")
        fleet = lab.fleet(runners)
        figures.before = usage(lab.pid)
        say(f"{runners} runners joining")
        with lab.watch() as writes:
            figures.joined = joined = fleet.join()
            figures.after = usage(lab.pid)
            figures.join_writes = writes()
        figures.problems += summary("joins failed", joined.errors)
        if sorted(joined.claims) != list(range(1, runners + 1)):
            figures.problems.append(f"welcomed ids are not 1..{runners} each once")
        figures.problems += lab.kernel_problems(joined.claims)
        say(f"{runners} runners heartbeating for {hold:g} s")
        beats, figures.hold_start = fleet.heartbeats(), usage(lab.pid)
        started = time.perf_counter()
        time.sleep(hold)
        figures.hold_end, figures.hold = usage(lab.pid), time.perf_counter() - started
        figures.heartbeats = fleet.heartbeats() - beats
        lost = fleet.stop()
        figures.problems += summary("runners lost their connection while heartbeating", lost)
        say("krnet node overlay --json, here and remote")
        figures.overlay_local = median_seconds(lab.overlay_json, runners, repeat)
        figures.overlay_remote = median_seconds(lab.overlay_json_remote, runners, repeat)
        say("restarting the host")
        figures.restart = lab.restart()
        figures.problems += [f"after the restart: {p}" for p in lab.kernel_problems(joined.claims)]
        say(f"restarting the host without vxkr{runners}")
        figures.repair = lab.restart(damage=f"vxkr{runners}")
        figures.problems += [f"after the repair: {p}" for p in lab.kernel_problems(joined.claims)]
    if sampled is not None:  # the first serve process: the joins and the heartbeats
        figures.profile = Path(f"{sampled}.{serve_pid}").read_text()
    say(f"the kernel floor for {runners} runners")
    defaults = Settings()  # the lab host's scheme
    port, mtu = defaults.overlay_vxlan_port, defaults.overlay_mtu
    figures.floor = measure_floor(lab.plan, joined.claims, port, mtu)
    return figures


def lab_settings(runners: int) -> dict[str, object]:
    """The seed's /16 per runner gives 255 ids; more need /20 blocks, as an operator sets."""
    if runners <= Settings().plan().max_runners:
        return {}
    return {"overlay_runner_prefix": WIDE_PREFIX}


def summary(what: str, errors: list[str]) -> list[str]:
    """One problem line for many alike errors."""
    return [f"{len(errors)} {what}, first: {errors[0]}"] if errors else []


def median_seconds(command: Callable[[], str], runners: int, repeat: int) -> float:
    """Median wall time of `command`, whose JSON must list `runners` runners."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        output = command()
        times.append(time.perf_counter() - started)
        total = json.loads(output)["total"]
        if total != runners:
            raise RuntimeError(f"node overlay listed {total} runners, not {runners}")
    return statistics.median(times)


# -- the report -----------------------------------------------------------------------------


def report(runs: list[Figures]) -> None:
    """A column per count of runners, and the ratio of the largest count to the smallest."""
    rows: list[tuple[str, list[float], str]] = []

    def row(label: str, pick: Callable[[Figures], float], unit: str = "{:.2f}") -> None:
        rows.append((label, [pick(figures) for figures in runs], unit))

    row("fresh host: start until listening, s", lambda f: f.start)
    row("joins: go until all welcomed, s", lambda f: joined(f).wall)
    row("  per runner, ms", lambda f: joined(f).wall / f.runners * 1000, "{:.1f}")
    row("  latency p50, s", lambda f: percentile(joined(f).latencies, 0.5))
    row("  latency p99, s", lambda f: percentile(joined(f).latencies, 0.99))
    row("  kernel floor: ip -batch links, s", lambda f: floor(f).links, "{:.3f}")
    row("  kernel floor: iptables-restore, s", lambda f: floor(f).rules, "{:.3f}")
    row("  all welcomed / kernel floor", lambda f: joined(f).wall / floor_total(f), "{:.0f}x")
    row("  netlink events", lambda f: len(written(f.join_writes).netlink), "{:.0f}")
    row("  nft ruleset changes", lambda f: len(written(f.join_writes).nft), "{:.0f}")
    row("    of which deletions", lambda f: deletions(written(f.join_writes)), "{:.0f}")
    row("RSS before joins, MiB", lambda f: used(f.before).rss_kib / 1024, "{:.1f}")
    row("RSS after joins, MiB", lambda f: used(f.after).rss_kib / 1024, "{:.1f}")
    row("RSS peak (VmHWM) after joins, MiB", lambda f: used(f.after).peak_kib / 1024, "{:.1f}")
    row("CPU during joins, serve, s", lambda f: used(f.after).cpu - used(f.before).cpu)
    row(
        "CPU during joins, its iptables children, s",
        lambda f: used(f.after).children_cpu - used(f.before).children_cpu,
    )
    row("CPU while heartbeating, % of one core", heartbeat_cpu_percent, "{:.1f}")
    row("  heartbeats answered per s", lambda f: f.heartbeats / f.hold, "{:.1f}")
    row("restart: start until listening, s", lambda f: restarted(f.restart).seconds)
    row("  netlink events", lambda f: len(restarted(f.restart).netlink), "{:.0f}")
    row("  nft ruleset changes", lambda f: len(restarted(f.restart).nft), "{:.0f}")
    row("  changes the host recorded", lambda f: len(restarted(f.restart).recorded), "{:.0f}")
    row("repair restart (one tunnel deleted), s", lambda f: restarted(f.repair).seconds)
    row("  netlink events", lambda f: len(restarted(f.repair).netlink), "{:.0f}")
    row("  nft ruleset changes", lambda f: len(restarted(f.repair).nft), "{:.0f}")
    row("  changes the host recorded", lambda f: len(restarted(f.repair).recorded), "{:.0f}")
    row("node overlay --json, host ns, ms", lambda f: f.overlay_local * 1000, "{:.0f}")
    row("node overlay --connect --json, ms", lambda f: f.overlay_remote * 1000, "{:.0f}")

    width = max(len(label) for label, *_ in rows)
    counts = "".join(f"  {figures.runners:>9}" for figures in runs)
    print(f"  {'':{width}}{counts}   ratio")
    for label, values, unit in rows:
        low, high = values[0], values[-1]
        ratio = f"{high / low:6.2f}x" if low else "     -"
        cells = "".join(f"  {unit.format(value):>9}" for value in values)
        print(f"  {label:{width}}{cells}  {ratio}")
    for figures in runs:
        for change in restarted(figures.repair).recorded:
            print(f"  {figures.runners} runners, repair recorded: {change}")
        verdict = "; ".join(figures.problems) or "all tunnels, routes, guard entries and ids right"
        print(f"  {figures.runners} runners, checked after joins and each restart: {verdict}")
    if runs[-1].profile:
        print(f"  host CPU profile, {runs[-1].runners} runners (joins, heartbeats):")
        print("    " + runs[-1].profile.replace("\n", "\n    "))


def heartbeat_cpu_percent(figures: Figures) -> float:
    start, end = used(figures.hold_start), used(figures.hold_end)
    spent = end.cpu + end.children_cpu - start.cpu - start.children_cpu
    return 100 * spent / figures.hold


def floor(figures: Figures) -> Floor:
    assert figures.floor is not None
    return figures.floor


def floor_total(figures: Figures) -> float:
    return floor(figures).links + floor(figures).rules


def joined(figures: Figures) -> Joined:
    assert figures.joined is not None
    return figures.joined


def used(sample: Usage | None) -> Usage:
    assert sample is not None
    return sample


def deletions(writes: Writes) -> int:
    return sum(line.startswith("delete") for line in writes.nft)


def written(writes: Writes | None) -> Writes:
    assert writes is not None
    return writes


def restarted(restart: Restart | None) -> Restart:
    assert restart is not None
    return restart


# -- main -----------------------------------------------------------------------------------


class OutOfTime(Exception):
    """The benchmark ran past its --budget."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise OutOfTime("ran past its --budget; everything was torn down")
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runners", type=int, nargs="+", default=[10, 255], help="counts, each run (10 255)"
    )
    parser.add_argument("--repeat", type=int, default=7, help="node overlay runs (default 7)")
    parser.add_argument("--hold", type=float, default=30.0, help="heartbeat window, s (30)")
    parser.add_argument("--budget", type=int, default=600, help="give up after this, s (600)")
    parser.add_argument("--profile", action="store_true", help="sample the host's CPU")
    arguments = parser.parse_args()
    counts = sorted(arguments.runners)
    top = min(Settings(overlay_runner_prefix=WIDE_PREFIX).plan().max_runners, MAX_SIMULATED)
    if not 1 <= counts[0] <= counts[-1] <= top:
        parser.error(f"every --runners count must be 1..{top}")
    reason = missing_prerequisites(REQUIRED)
    if reason is not None:
        print(f"scale: {reason}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGALRM, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.alarm(arguments.budget)
    load = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="krt-scale-") as workdir:
            profile = arguments.profile
            figures = [
                measure(count, Path(workdir), arguments.repeat, arguments.hold, say, profile)
                for count in counts
            ]
    except (OutOfTime, RuntimeError, TimeoutError, LabError, OSError) as error:
        print(f"scale: {error}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    print(
        f"krnet scale: host `krnet serve` in a namespace, overlay on; {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}; load average {load[0]:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    report(figures)
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    return 0 if not any(f.problems for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
