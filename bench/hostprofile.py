"""Run `krnet` with a sampling profiler: where the host's CPU goes, every thread included.

bench/scale.py --profile starts the host as `python bench/hostprofile.py OUT -- ARGS...`
instead of `python -m krnet ARGS...`. A thread samples every other thread's stack
(`sys._current_frames`) every INTERVAL seconds while the thread is on the CPU (its thread
CPU time moved since the last sample), and at exit writes to OUT.PID the functions seen most,
as the innermost frame (self) and anywhere on the stack (total), in % of samples.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
from pathlib import Path

INTERVAL = 0.005
TOP = 40


def _where(code: object) -> str:
    name = getattr(code, "co_qualname", getattr(code, "co_name", "?"))
    path = Path(getattr(code, "co_filename", "?"))
    return f"{path.parent.name}/{path.name}:{name}"


class Sampler:
    """Counts, per function, the samples in which it runs (self) or waits on a callee (total)."""

    def __init__(self) -> None:
        self.own: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._cpu: dict[int, float] = {}

    def run(self) -> None:
        me = threading.get_ident()
        while True:
            time.sleep(INTERVAL)
            for ident, frame in sys._current_frames().items():
                if ident == me or not self._on_cpu(ident):
                    continue
                self.samples += 1
                self.own[_where(frame.f_code)] += 1
                seen = set()
                while frame is not None:
                    seen.add(_where(frame.f_code))
                    frame = frame.f_back  # type: ignore[assignment]
                self.total.update(seen)

    def _on_cpu(self, ident: int) -> bool:
        """Whether the thread used CPU since its last sample (idle threads are not counted)."""
        try:
            clock = time.pthread_getcpuclockid(ident)
        except (OSError, AttributeError):
            return True
        used = time.clock_gettime(clock)
        before, self._cpu[ident] = self._cpu.get(ident), used
        return before is None or used > before

    def write(self, out: Path) -> None:
        lines = [f"{self.samples} samples of threads on the CPU, every {INTERVAL * 1000:g} ms"]
        for title, counts in (("self", self.own), ("total", self.total)):
            lines.append(f"-- {title}")
            for where, count in counts.most_common(TOP):
                lines.append(f"{100 * count / max(1, self.samples):5.1f} %  {where}")
        out.write_text("\n".join(lines) + "\n")


def main() -> int:
    out, separator, *arguments = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: hostprofile.py OUT -- KRNET-ARGS...")
    sampler = Sampler()
    threading.Thread(target=sampler.run, name="bench-sampler", daemon=True).start()
    atexit.register(sampler.write, Path(f"{out}.{os.getpid()}"))
    from krnet.cli import main as krnet_main

    return krnet_main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
