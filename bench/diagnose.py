"""Diagnosis and `krnet node overlay` time at 10, 255, 1,000 and 4,095 runners, against 10.

    .venv/bin/python bench/diagnose.py [--repeats 5] [--runners 10,255,1000,4095]

Times `diagnose` (what `krnet doctor` and the TUI's gather worker run) and the overlay view
(`overlay_status` and `render_overlay_table`, what `krnet node overlay` prints) over the
synthetic hosts of tests/tui/fleet.py (the recorded 255-runner host widened to
overlay_runner_prefix 20). Prints the median of `--repeats` runs of each, per size, and each
size's ratio to the first size (and per runner), all measured in the same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from krnet.core.model.snapshot import NodeSnapshot  # noqa: E402
from krnet.core.observe.diagnose.engine import diagnose  # noqa: E402
from krnet.core.observe.status import overlay_status, render_overlay_table  # noqa: E402
from tests.tui.fleet import fleet  # noqa: E402


def overlay_view(snapshot: NodeSnapshot) -> str:
    """The host's `krnet node overlay` table for this snapshot's record."""
    status = overlay_status(
        mode="host",
        settings=snapshot.settings,
        runners=snapshot.runners,
        now=snapshot.taken_at,
        runner_timeout=snapshot.settings.runner_timeout,
    )
    return render_overlay_table(status)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runners", default="10,255,1000,4095")
    args = parser.parse_args()
    sizes = [int(size) for size in args.runners.split(",")]
    parts: dict[str, Callable[[NodeSnapshot], object]] = {
        "diagnose": diagnose,
        "overlay": overlay_view,
    }
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"median of {args.repeats} runs, Python {sys.version.split()[0]}, load {load}")
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        snapshot = fleet(size)
        results[size] = {
            name: median_ms(partial(run, snapshot), args.repeats) for name, run in parts.items()
        }
        shown = "   ".join(f"{name} {ms:8.1f} ms" for name, ms in results[size].items())
        print(f"{size:>6} runners   {shown}")
    base = sizes[0]
    for size in sizes[1:]:
        ratios = "   ".join(
            f"{name} x{results[size][name] / results[base][name]:.1f} "
            f"(per runner x{results[size][name] * base / (results[base][name] * size):.2f})"
            for name in parts
        )
        print(f"ratio {size}/{base}: {ratios}")


if __name__ == "__main__":
    main()
