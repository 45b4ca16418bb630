"""Main-thread time per TUI refresh at 10, 255, 1,000 and 4,095 runners, against the 10-runner run.

    .venv/bin/python bench/tui.py [--refreshes 30] [--runners 10,255,1000,4095]

Replays a synthetic host (tests/tui/fleet.py: the recorded 255-runner host widened to
overlay_runner_prefix 20) with counters and clocks advancing, in a headless app at 120x40. For
each refresh it times `KrnetApp.apply` (the visible view redrawn from the data, wall clock) and
the UI thread's CPU time for apply plus the layout and screen update it causes (thread_time, so
sleeps and other processes on the machine do not count), and then every view redrawn. The
first refresh at a size draws whole tables (every row added, the columns set); it is reported
apart ("first") from the steady refreshes after it, whose rows only change cells. The
worker's share (diagnosis, rates, the visible view's rows) is timed apart, as the app runs it
off the UI thread; the diagnosis is timed on the first `--diagnoses` refreshes and reused
after (at 4,095 runners it takes seconds, and the UI thread's share does not depend on it).
Prints median and p95 of each, and each size's ratio to the first size, all measured in the
same process.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from krnet.core.model.snapshot import NodeSnapshot  # noqa: E402
from krnet.tui.app import VIEW_IDS, KrnetApp, rows_for  # noqa: E402
from krnet.tui.model import RateTracker, ViewData  # noqa: E402
from tests.tui.fleet import fleet  # noqa: E402


def advanced(snapshot: NodeSnapshot, step: int) -> NodeSnapshot:
    """`step` refreshes later: two seconds on, every counter grown, so every rate cell changes."""
    links = {
        name: dataclasses.replace(
            link,
            rx_bytes=link.rx_bytes + step * (1000 + 37 * link.index) * (step % 3 + 1),
            tx_bytes=link.tx_bytes + step * (800 + 11 * link.index),
        )
        for name, link in snapshot.links.items()
    }
    taken_at = snapshot.taken_at + timedelta(seconds=2 * step)
    return dataclasses.replace(snapshot, taken_at=taken_at, links=links)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Worker:
    """The gather worker's share: diagnosis (the first `diagnoses` times) and rates."""

    def __init__(self, diagnoses: int) -> None:
        self.diagnoses = diagnoses
        self.rates = RateTracker()
        self.diagnosed: ViewData | None = None

    def __call__(self, snapshot: NodeSnapshot) -> ViewData:
        if self.diagnoses > 0 or self.diagnosed is None:
            self.diagnoses -= 1
            self.diagnosed = ViewData.of(snapshot)
        known = self.diagnosed
        rates = self.rates.update(snapshot)
        return ViewData(snapshot, known.checks, known.health, known.mismatches, rates)


async def measure(base: NodeSnapshot, refreshes: int, diagnoses: int) -> dict[str, list[float]]:
    """Times (ms) of the worker's and the UI thread's share of each refresh."""
    app = KrnetApp(lambda: fleet(3), refresh_interval=3600, where="bench")
    times: dict[str, list[float]] = {
        "worker": [],
        "first": [],
        "apply": [],
        "ui thread": [],
        "all views": [],
    }
    worker = Worker(diagnoses)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        views = [app.query_one(f"#{view_id}-view") for view_id in VIEW_IDS]
        for step in range(1, refreshes + 1):
            app.action_view(VIEW_IDS[step % len(VIEW_IDS)])  # each view takes its turn
            await pilot.pause()
            start = time.perf_counter()
            data = worker(advanced(base, step))
            rows = rows_for(VIEW_IDS[step % len(VIEW_IDS)], data)  # the worker's, too
            if step <= diagnoses:
                times["worker"].append(_ms(start, time.perf_counter()))
            wall, cpu = await _ui_time(pilot, partial(app.apply, data, rows))
            if step == 1:  # the whole tables drawn: not a steady refresh
                times["first"].append(cpu)
            else:
                times["apply"].append(wall)
                times["ui thread"].append(cpu)
            data = worker(advanced(base, step))  # fresh data, so every view redraws
            redraw_all = partial(_show_all, views, data)
            all_views = (await _ui_time(pilot, redraw_all))[1]
            if step > 1:
                times["all views"].append(all_views)
        app.exit()
    return times


def _show_all(views: list[Any], data: ViewData) -> None:
    for view in views:
        view.show(data)


async def _ui_time(pilot: Pilot[None], action: Callable[[], object]) -> tuple[float, float]:
    """Wall time of `action` alone, and the UI thread's CPU time for it and the screen
    update it causes (thread_time: sleeps and other processes do not count)."""
    cpu, start = time.thread_time(), time.perf_counter()
    action()
    wall = _ms(start, time.perf_counter())
    await pilot.pause()
    return wall, _ms(cpu, time.thread_time())


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000


def report(label: str, times: dict[str, list[float]]) -> dict[str, float]:
    medians = {}
    for part, values in times.items():
        medians[part] = statistics.median(values)
        p95 = percentile(values, 0.95)
        print(f"{label:>14} {part:<10} median {medians[part]:8.1f} ms   p95 {p95:8.1f} ms")
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=30)
    parser.add_argument("--runners", default="10,255,1000,4095", help="sizes, the first the base")
    parser.add_argument("--diagnoses", type=int, default=2, help="refreshes with a diagnosis")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.runners.split(",")]
    print(f"{args.refreshes} refreshes each, headless 120x40, Python {sys.version.split()[0]}")
    medians = {}
    for size in sizes:
        times = asyncio.run(measure(fleet(size), args.refreshes, args.diagnoses))
        medians[size] = report(f"{size:,} runners", times)
    base = sizes[0]
    for size in sizes[1:]:
        ratios = "   ".join(
            f"{p} {medians[size][p] / medians[base][p]:.1f}x" for p in medians[base]
        )
        print(f"{'ratio':>14} {size}/{base}: {ratios}")


if __name__ == "__main__":
    main()
