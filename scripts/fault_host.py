"""Faults of a host under many joins: killed with SIGKILL at a random moment, its record locked.

The lab is bench/scalelab.py's: the real `krnet serve` with the overlay enabled in a namespace,
and simulated runners (bench/simrunner.py: the real protocol) joining from a second namespace,
each claiming its own underlay address. A kill round starts from an empty host, kills it after
a random number of welcomes, restarts it and checks what the reference promises: no id given
twice, the record and the kernel agreeing after the start-up reconcile, and every runner ending
with its id (the same one for those welcomed before the kill).
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scalelab import ScaleLab, claimed_address  # noqa: E402
from krnet.core.model.records import RunnerRecord, identity_hash  # noqa: E402
from krnet.core.record.reader import database_path, read_runners  # noqa: E402
from krnet.lab.cluster import HOST_UNDERLAY  # noqa: E402
from krnet.lab.proofs import ProofFailed  # noqa: E402
from scripts.fault_store import LOCK_PHRASE, locked  # noqa: E402

JOIN_PORT = 8470
RECORD_PACE = 0.01  # seconds the host takes to record one join (docs/performance.md, Join)
JOIN_TIMEOUT = 600.0  # a simulated runner waits this long for its welcome (255 queue up)
SWARM_TIMEOUT = 900.0

# (identity, hostname, claimed underlay address)
Runner = tuple[str, str, str]
RUNNER_KEYS: dict[str, str] = {}  # identity -> the key its enrolment got, kept across swarms


# -- runners, and what is compared (pure) ------------------------------------------------------


def make_runners(count: int, rng: random.Random) -> list[Runner]:
    return [
        (uuid.UUID(int=rng.getrandbits(128)).hex, f"sim-{index}", claimed_address(index))
        for index in range(1, count + 1)
    ]


def duplicate_ids(records: list[RunnerRecord]) -> list[str]:
    """Identities holding more than one id (the primary key already keeps ids unique)."""
    holder: dict[str, int] = {}
    problems = []
    for record in records:
        if record.identity_hash in holder:
            problems.append(
                f"identity hash {record.identity_hash[:8]} holds ids "
                f"{holder[record.identity_hash]} and {record.runner_id}"
            )
        if record.identity_hash is not None:
            holder[record.identity_hash] = record.runner_id
    return problems


def changed_ids(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Runners of `before` whose id in `after` differs."""
    return [
        f"runner {identity[:8]} had id {runner_id}, now {after.get(identity)}"
        for identity, runner_id in sorted(before.items(), key=lambda item: item[1])
        if after.get(identity) != runner_id
    ]


def recorded_ids(records: list[RunnerRecord], runners: list[Runner]) -> dict[str, int]:
    """Each runner's id in the record (which keeps only a hash of each identity)."""
    ids_by_hash = {r.identity_hash: r.runner_id for r in records if r.identity_hash is not None}
    return {
        identity: ids_by_hash[identity_hash(identity)]
        for identity, _, _ in runners
        if identity_hash(identity) in ids_by_hash
    }


def ids(outcomes: dict[str, int | str]) -> dict[str, int]:
    """The runners a swarm got welcomed, with their ids."""
    return {identity: got for identity, got in outcomes.items() if isinstance(got, int)}


# -- the lab --------------------------------------------------------------------------------------


class HostLab(ScaleLab):
    """The scale lab, plus what fault rounds need: an empty host, the record, a swarm of
    runners with identities kept across rounds, and a kill in the middle of it."""

    def fresh_host(self) -> None:
        """Stop the host and remove what it made and its record: the next start is a first."""
        self.cluster.stop(self.host)
        self.cluster.krnet(self.host, "cleanup", "--yes")
        shutil.rmtree(self.host.data_dir, ignore_errors=True)
        RUNNER_KEYS.clear()

    def alive(self) -> bool:
        return self.host.serve is not None and self.host.serve.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.cluster.stop(self.host, kill=True)

    def records(self) -> list[RunnerRecord]:
        records = read_runners(database_path(self.host.data_dir))
        if records is None:
            raise ProofFailed(f"cannot read the record in {self.host.data_dir}")
        return records

    def swarm(
        self,
        runners: list[Runner],
        *,
        kill_after: int | None = None,
        kill_delay: float | None = None,
    ) -> dict[str, int | str]:
        """Every runner joins at once from the sim namespace; the host gets SIGKILL once
        `kill_after` were welcomed, or `kill_delay` seconds after the joins began. Each
        identity's id, or the error its join got."""
        process = self.sim.popen(
            [sys.executable, str(Path(__file__).resolve()), "swarm", HOST_UNDERLAY, str(JOIN_PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdin is not None and process.stdout is not None
        request = {"token": self.cluster.token, "runners": runners, "keys": RUNNER_KEYS}
        process.stdin.write(json.dumps(request).encode())
        process.stdin.close()
        outcomes: dict[str, int | str] = {}
        timer = threading.Timer(kill_delay or 0.0, self.kill)
        try:
            for line in _lines(process.stdout, time.monotonic() + SWARM_TIMEOUT):
                result = json.loads(line)
                if "started" in result and kill_delay is not None:
                    timer.start()
                if "identity" in result:
                    outcomes[result["identity"]] = result.get("runner_id") or result["error"]
                if result.get("runner_key"):
                    RUNNER_KEYS[result["identity"]] = result["runner_key"]
                if kill_after is not None and len(ids(outcomes)) >= kill_after:
                    self.kill()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
            process.wait()
        return outcomes


def _lines(stream: IO[bytes], deadline: float) -> Iterator[bytes]:
    """Lines of a pipe as they arrive (no read-ahead buffer hides one), until EOF; ProofFailed
    at `deadline`."""
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise ProofFailed("the simulated runners did not finish in time")
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        *complete, pending = (pending + chunk).split(b"\n")
        yield from complete


# -- fault: the host killed during joins ----------------------------------------------------------


@dataclass(frozen=True)
class KillRound:
    """What one kill round saw; `problems` is empty when every promise held."""

    runners: int
    trigger: str  # when the host was killed
    welcomed_before_kill: int
    records_after_restart: int
    rejoined: int
    kept: int  # of those welcomed before the kill, how many got the same id again
    violations: tuple[str, ...]  # found by the checks of `kill_round`

    def problems(self) -> list[str]:
        """No id twice, record = kernel after the restart, every runner its (same) id."""
        return list(self.violations)

    def line(self) -> str:
        verdict = f"{len(self.violations)} PROBLEMS" if self.violations else "all agree"
        return (
            f"killed {self.trigger} ({self.welcomed_before_kill}/{self.runners} welcomed); "
            f"restarted with {self.records_after_restart} records; {self.rejoined}/"
            f"{self.runners} rejoined, {self.kept}/{self.welcomed_before_kill} of the welcomed "
            f"with the same id; record, kernel and ids: {verdict}"
        )


def disagreements(lab: HostLab, records: list[RunnerRecord]) -> list[str]:
    """Where the record and the kernel differ (a record without its tunnel, route or guard
    entry, a tunnel without a record), and identities holding two ids."""
    claims = {record.runner_id: record.physical_ip for record in records}
    return lab.kernel_problems(claims) + duplicate_ids(records)


def kill_round(lab: HostLab, count: int, rng: random.Random, *, early: bool) -> KillRound:
    """An empty host, `count` runners joining at once, SIGKILL at a random moment (`early`:
    while the joins are still being recorded, else after a random number of welcomes), a
    restart (its reconcile), the checks, everyone rejoining, the checks again."""
    runners = make_runners(count, rng)
    lab.fresh_host()
    lab.start_host()
    if early:
        delay = rng.uniform(0, count * RECORD_PACE)
        trigger, outcomes = f"{delay:.2f} s into the joins", lab.swarm(runners, kill_delay=delay)
    else:
        after = rng.randrange(count)
        trigger, outcomes = f"after {after} welcomes", lab.swarm(runners, kill_after=after)
    welcomed = ids(outcomes)
    lab.start_host()
    records = lab.records()
    problems = disagreements(lab, records)
    recorded = recorded_ids(records, runners)
    problems += [f"in the record: {problem}" for problem in changed_ids(welcomed, recorded)]
    second = lab.swarm(runners)
    rejoined = ids(second)
    problems += [
        f"{identity[:8]} not welcomed again: {second.get(identity)}"
        for identity, _, _ in runners
        if identity not in rejoined
    ]
    problems += changed_ids(recorded, rejoined)  # recorded before the kill: welcomed or not
    if len(set(rejoined.values())) != len(rejoined):
        problems.append("two runners were welcomed with the same id")
    final = lab.records()
    problems += [f"at the end: {problem}" for problem in disagreements(lab, final)]
    final_ids = recorded_ids(final, runners)
    problems += [f"in the final record: {p}" for p in changed_ids(rejoined, final_ids)]
    return KillRound(
        runners=count,
        trigger=trigger,
        welcomed_before_kill=len(welcomed),
        records_after_restart=len(records),
        rejoined=len(rejoined),
        kept=sum(rejoined.get(identity) == got for identity, got in welcomed.items()),
        violations=tuple(problems),
    )


# -- fault: the record locked by another process while runners join -------------------------------


@dataclass(frozen=True)
class LockedJoin:
    """A join while another process held the host's database, then the same join again."""

    refusal: str  # what the join got while the record was locked
    host_alive: bool  # after the refusal
    unchanged: bool  # the record after the lock is the record before it
    retried: int | str  # the same runner's join once the lock was released
    kept: bool  # the earlier runners kept their ids

    def problems(self) -> list[str]:
        """A clear refusal naming the lock, the host serving on, nothing lost, the retry in."""
        problems = []
        if not (self.refusal.startswith("[internal]") and LOCK_PHRASE in self.refusal):
            problems.append(f"the join under the lock got {self.refusal!r}")
        if not self.host_alive:
            problems.append("the host exited while its record was locked")
        if not self.unchanged:
            problems.append("the record changed under the lock")
        if self.retried != 3:
            problems.append(f"the retried join got {self.retried!r}, not id 3")
        if not self.kept:
            problems.append("the earlier runners lost their ids")
        return problems

    def line(self) -> str:
        alive = "served on" if self.host_alive else "EXITED"
        return (
            f"a join under the lock got {self.refusal!r}; the host {alive}; once released the "
            f"same join got id {self.retried}"
        )


def join_while_locked(lab: HostLab, rng: random.Random) -> LockedJoin:
    """Two runners join, another process locks the record, a third joins, the lock goes,
    the third joins again."""
    runners = make_runners(3, rng)
    lab.fresh_host()
    lab.start_host()
    earlier = ids(lab.swarm(runners[:2]))
    before = lab.records()
    with locked(database_path(lab.host.data_dir)):
        refusal = lab.swarm(runners[2:])[runners[2][0]]
        alive = lab.alive()
    unchanged = lab.records() == before
    retried = lab.swarm(runners[2:])[runners[2][0]]
    final = recorded_ids(lab.records(), runners)
    return LockedJoin(str(refusal), alive, unchanged, retried, not changed_ids(earlier, final))


# -- the simulated runners' side (runs inside the sim namespace) ----------------------------------


async def _swarm(host: str, port: int) -> None:
    import asyncio

    from bench.simrunner import SimRunner, join

    request = json.loads(sys.stdin.read())

    async def one(identity: str, hostname: str, address: str) -> None:
        runner = SimRunner(identity, hostname, address, request["keys"].get(identity))
        try:
            _, connection, welcome = await join(host, port, request["token"], runner, JOIN_TIMEOUT)
        except Exception as exc:
            code = getattr(exc, "code", type(exc).__name__)
            _emit({"identity": identity, "error": f"[{code}] {exc}"})
            return
        key = welcome.runner_key
        _emit({"identity": identity, "runner_id": welcome.runner_id, "runner_key": key})
        await connection.close()

    _emit({"started": True})
    await asyncio.gather(*(one(*runner) for runner in request["runners"]))


def _emit(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["swarm"]:
    import asyncio

    asyncio.run(_swarm(sys.argv[2], int(sys.argv[3])))
