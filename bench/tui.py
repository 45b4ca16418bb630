"""Main-thread time per TUI refresh with 255 runners, against a 10-runner baseline.

    .venv/bin/python bench/tui.py [--refreshes 30]

Replays a recorded 255-runner host snapshot (tests/fixtures/snapshots/host_255.json) with
counters and clocks advancing, in a headless app at 120x40. For each refresh it times
`KrnetApp.apply` (every view redrawn from the data, wall clock) and the UI thread's CPU time
for apply plus the layout and screen update it causes (thread_time, so sleeps and other
processes on the machine do not count); the worker's share (diagnosis, rates) is timed
apart, in the same way the app runs it off the UI thread. Prints
median and p95 of each, and the 255/10 ratio measured in the same process.
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

from krnet.core.model.plan import runner_id_from_tunnel  # noqa: E402
from krnet.core.model.snapshot import NodeSnapshot  # noqa: E402
from krnet.core.model.snapshot_json import load_file  # noqa: E402
from krnet.tui.app import VIEW_IDS, KrnetApp  # noqa: E402
from krnet.tui.model import ViewData, ViewModel  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "snapshots" / "host_255.json"


def trimmed(snapshot: NodeSnapshot, runners: int) -> NodeSnapshot:
    """The same host with only its first `runners` runners and their tunnels."""
    keep = {runner.runner_id for runner in snapshot.runners[:runners]}
    links = {
        name: link
        for name, link in snapshot.links.items()
        if runner_id_from_tunnel(name) is None or runner_id_from_tunnel(name) in keep
    }
    return dataclasses.replace(
        snapshot,
        runners=snapshot.runners[:runners],
        links=links,
        probes={rid: probe for rid, probe in snapshot.probes.items() if rid in keep},
    )


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


async def measure(base: NodeSnapshot, refreshes: int) -> dict[str, list[float]]:
    """Times (ms) of the worker's and the UI thread's share of each refresh."""
    app = KrnetApp(lambda: base, refresh_interval=3600, where="bench")
    times: dict[str, list[float]] = {"worker": [], "apply": [], "ui thread": [], "all views": []}
    model = ViewModel()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        views = [app.query_one(f"#{view_id}-view") for view_id in VIEW_IDS]
        for step in range(1, refreshes + 1):
            app.action_view(VIEW_IDS[step % len(VIEW_IDS)])  # each view takes its turn
            await pilot.pause()
            start = time.perf_counter()
            data = model.update(advanced(base, step))
            times["worker"].append(_ms(start, time.perf_counter()))
            wall, cpu = await _ui_time(pilot, partial(app.apply, data))
            times["apply"].append(wall)
            times["ui thread"].append(cpu)
            data = model.update(advanced(base, step))  # fresh data, so every view redraws
            redraw_all = partial(_show_all, views, data)
            times["all views"].append((await _ui_time(pilot, redraw_all))[1])
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
        print(f"{label:>12} {part:<10} median {medians[part]:7.1f} ms   p95 {p95:7.1f} ms")
    return medians


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=30)
    args = parser.parse_args(argv)
    full = load_file(FIXTURE)

    def run(snapshot: NodeSnapshot) -> dict[str, list[float]]:
        return asyncio.run(measure(snapshot, args.refreshes))

    print(f"{args.refreshes} refreshes each, headless 120x40, Python {sys.version.split()[0]}")
    baseline = report("10 runners", run(trimmed(full, 10)))
    scaled = report("255 runners", run(full))
    for part in baseline:
        print(f"{'ratio':>12} {part:<10} 255/10 = {scaled[part] / baseline[part]:.1f}x")


if __name__ == "__main__":
    main()
