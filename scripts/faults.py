"""The fault campaign of issue 6 in the lab: every fault, one line per outcome, then a summary.

    sudo .venv/bin/python scripts/faults.py                  # the whole campaign (about 12 minutes)
    sudo .venv/bin/python scripts/faults.py --rounds 3 --runners 24 --only host-kill

Faults: the host killed with SIGKILL at random moments during concurrent joins (`--rounds`
rounds of `--runners` simulated runners), its record locked by another process, the disk full
under the record, a database from a newer krnet, a runner killed during its own set-up, Docker
stopped and started under a runner, a runner's underlay link down and up, and links and rules
changed by hand. Each line starts with PASS or FAIL; the exit status is 1 when any failed.
tests/lab/test_faults.py and tests/unit/test_store_faults.py run the same steps, smaller.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from krnet.lab.cluster import Cluster  # noqa: E402
from scripts import fault_host, fault_runner, fault_store  # noqa: E402

HOST_FAULTS = ("host-kill", "record-locked")
STORE_FAULTS = ("disk-full", "newer-database")
CLUSTER_FAULTS = ("runner-killed-in-setup", "docker-restart", "underlay-flap", "by-hand")
FAULTS = HOST_FAULTS + STORE_FAULTS + CLUSTER_FAULTS


class Outcome(Protocol):
    def problems(self) -> list[str]: ...

    def line(self) -> str: ...


Result = tuple[str, bool]  # the printed line, and whether it passed


def check(name: str, step: Callable[[], Outcome]) -> Result:
    """Run one fault: PASS with what happened, or FAIL with each broken promise."""
    started = time.monotonic()
    try:
        outcome = step()
    except Exception as exc:
        return _result(name, started, f"raised {_first_line(exc)}", passed=False)
    problems = outcome.problems()
    detail = outcome.line() + "".join(f"\n      - {problem}" for problem in problems)
    return _result(name, started, detail, passed=not problems)


def _result(name: str, started: float, detail: str, *, passed: bool) -> Result:
    took = time.monotonic() - started
    return f"{'PASS' if passed else 'FAIL'}  {name} [{took:.0f} s]: {detail}", passed


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def host_faults(workdir: Path, args: argparse.Namespace, rng: random.Random) -> Iterator[Result]:
    with fault_host.HostLab(workdir / "host") as lab:
        if "host-kill" in args.only:
            for number in range(1, args.rounds + 1):
                name = f"host-kill {number}/{args.rounds} ({args.runners} runners)"
                early = number % 2 == 0  # every other round while joins are being recorded
                yield check(
                    name,
                    lambda early=early: fault_host.kill_round(lab, args.runners, rng, early=early),
                )
        if "record-locked" in args.only:
            data_dir = lab.host.data_dir
            yield check("record-locked: a join", lambda: fault_host.join_while_locked(lab, rng))
            yield check(
                "record-locked: status commands, host running",
                lambda: fault_store.commands_under_lock(data_dir, readers_too=False),
            )
            # A lock that shuts readers out cannot be taken while krnet serve has the file open.
            lab.cluster.stop(lab.host)
            yield check(
                "record-locked: status commands, host stopped",
                lambda: fault_store.commands_under_lock(data_dir, readers_too=True),
            )


def store_faults(workdir: Path, args: argparse.Namespace) -> Iterator[Result]:
    if "disk-full" in args.only:
        yield check("disk-full", lambda: fault_store.disk_full(workdir / "full"))
    if "newer-database" in args.only:
        for mode in ("host", "runner"):
            yield check(
                f"newer-database ({mode})",
                lambda mode=mode: fault_store.serve_on_newer_database(workdir / mode, mode),
            )


def cluster_faults(workdir: Path, args: argparse.Namespace, rng: random.Random) -> Iterator[Result]:
    with Cluster(workdir / "cluster", runners=2) as cluster:
        cluster.start_all()
        cluster.wait_for_runners()
        first, second = cluster.nodes
        if "runner-killed-in-setup" in args.only:
            yield check(
                "runner-killed-in-setup",
                lambda: fault_runner.runner_killed_during_setup(cluster, second, rng),
            )
        if "docker-restart" in args.only:
            yield check("docker-restart", lambda: fault_runner.docker_restarted(cluster, first))
        if "underlay-flap" in args.only:
            yield check("underlay-flap", lambda: fault_runner.underlay_flap(cluster, second, first))
        if "by-hand" in args.only:
            for repair in fault_runner.repaired_by_reconcile(cluster):
                yield check("by-hand", lambda repair=repair: repair)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="host kill rounds (default 20)")
    parser.add_argument("--runners", type=int, default=255, help="joins per round (1..255)")
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable campaign")
    parser.add_argument("--only", nargs="+", choices=FAULTS, default=list(FAULTS))
    args = parser.parse_args(argv)
    if not 1 <= args.runners <= 255:
        parser.error("--runners must be from 1 to 255 (the id pool)")
    if os.geteuid() != 0:
        parser.error("the lab needs root (network and mount namespaces)")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    print(f"krnet fault campaign: seed {seed}, {os.cpu_count()} CPUs", flush=True)
    started, results = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="krt-faults-") as directory:
        workdir = Path(directory)
        groups = [
            (HOST_FAULTS, lambda: host_faults(workdir, args, rng)),
            (STORE_FAULTS, lambda: store_faults(workdir, args)),
            (CLUSTER_FAULTS, lambda: cluster_faults(workdir, args, rng)),
        ]
        for names, run in groups:
            if not set(names) & set(args.only):
                continue
            try:
                for line, passed in run():
                    print(line, flush=True)
                    results.append(passed)
            except Exception as exc:  # the lab itself failed: say so and go on
                print(f"FAIL  {', '.join(names)}: the lab failed: {_first_line(exc)}", flush=True)
                results.append(False)
    failed = results.count(False)
    minutes = (time.monotonic() - started) / 60
    passed = len(results) - failed
    print(f"{len(results)} outcomes: {passed} passed, {failed} failed ({minutes:.0f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
