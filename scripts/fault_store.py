"""Faults of the SQLite record: the file locked by another process, the disk full, a database
written by a newer krnet. Each fault returns what happened; its `problems()` are the promises
that did not hold (empty when all did) and `line()` says what happened in one line.

`disk_full` runs its steps in a child process in a private mount namespace (a tiny tmpfs as the
data dir), so nothing is mounted where anyone else can see it and nothing outlives the child.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from krnet.core.model.records import JoinRequest

TMPFS_SIZE = "300k"
FUTURE_REVISION = "9999_future"
LOCK_PHRASE = "locked by another process"

# Holds the lock until its stdin closes. In WAL mode readers still read; with "readers" the
# exclusive locking mode shuts them out as well.
_LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "readers":
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextmanager
def locked(path: Path, *, readers_too: bool = False) -> Iterator[None]:
    """Another process holds `path` with `BEGIN EXCLUSIVE` for the duration of the block."""
    process = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), "readers" if readers_too else "writers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        if process.stdout.readline().strip() != "locked":
            raise RuntimeError(f"could not lock {path}: {process.communicate()[1].strip()}")
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def integrity(path: Path) -> str:
    """SQLite's own verdict on the file ("ok" when sound)."""
    with closing(sqlite3.connect(path)) as db:
        return ", ".join(row[0] for row in db.execute("PRAGMA integrity_check"))


def krnet_env() -> dict[str, str]:
    """This checkout's krnet, without the caller's KRNET_* settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KRNET_")}
    return environ | {"PYTHONPATH": str(ROOT)}


# -- status commands under a lock -----------------------------------------------------------------

STATUS_COMMANDS = (("node", "overlay", "--json"), ("db", "current"))


@dataclass(frozen=True)
class LockedCommands:
    """`krnet node overlay --json` and `krnet db current` while another process holds the file."""

    path: str
    readers_too: bool
    results: tuple[tuple[int, str, str], ...]  # (exit code, stdout, stderr), one per command

    def problems(self) -> list[str]:
        """A writers' lock leaves reads working; a readers' lock gets one line naming it."""
        problems = []
        for argv, (code, out, err) in zip(STATUS_COMMANDS, self.results, strict=True):
            name = "krnet " + " ".join(argv)
            if not self.readers_too and code != 0:
                problems.append(f"{name} failed under a writers' lock: {err.strip()}")
            one_line = err.count("\n") == 1 and err.startswith("krnet: ")
            if self.readers_too and not (code == 1 and out == "" and one_line):
                problems.append(f"{name} under a readers' lock: exit {code}, stderr {err!r}")
            if self.readers_too and (self.path not in err or LOCK_PHRASE not in err):
                problems.append(f"{name} does not name the lock on {self.path}: {err.strip()!r}")
        return problems

    def line(self) -> str:
        if not self.readers_too:
            return "under a writers' lock: node overlay and db current still read the record"
        return f"under a readers' lock both exit 1 with {self.results[0][2].strip()!r}"


def commands_under_lock(data_dir: Path, *, readers_too: bool) -> LockedCommands:
    """Run the status commands side by side (each may wait out its busy timeout) under a lock."""
    from krnet.core.record.reader import database_path

    path = database_path(data_dir)
    base = [sys.executable, "-m", "krnet", "--data-dir", str(data_dir)]
    with locked(path, readers_too=readers_too):
        running = [
            subprocess.Popen(
                [*base, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=krnet_env(),
                cwd=ROOT,
            )
            for argv in STATUS_COMMANDS
        ]
        outputs = [process.communicate(timeout=120) for process in running]
    results = tuple(
        (process.returncode, out, err) for process, (out, err) in zip(running, outputs, strict=True)
    )
    return LockedCommands(str(path), readers_too, results)


# -- disk full ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskFull:
    """What the store did on a full disk, and what was left once space came back."""

    kept_before: list[str]  # hostnames written before the disk filled
    writes_before_error: int  # writes that still fit (SQLite reuses free pages and WAL space)
    error_type: str
    error: str  # the error's message ("" when every write succeeded)
    read_while_full: list[str]
    integrity: str  # after space was freed
    kept_after: list[str]
    retry: str  # hostname written by the retry after freeing space

    def problems(self) -> list[str]:
        """A StoreError naming the full disk and the fix; nothing lost; a sound file."""
        problems = []
        if self.error_type != "StoreError":
            problems.append(f"a full disk gave {self.error_type or 'no error'}: {self.error}")
        if not ("krnet.db" in self.error and "disk is full" in self.error):
            problems.append(f"the error does not name the file and the full disk: {self.error}")
        if "free space" not in self.error:
            problems.append(f"the error does not say to free space: {self.error}")
        if self.read_while_full[: len(self.kept_before)] != self.kept_before:
            problems.append(f"earlier records read while full: {self.read_while_full}")
        if self.integrity != "ok":
            problems.append(f"integrity_check after freeing space: {self.integrity}")
        if self.kept_after != self.read_while_full:
            problems.append(f"records changed: {self.read_while_full} -> {self.kept_after}")
        if self.retry != "runner-999":
            problems.append("the write retried after freeing space failed")
        return problems

    def line(self) -> str:
        return (
            f"{self.writes_before_error} writes fit, then {self.error_type}: {self.error}; "
            f"{len(self.kept_before)} earlier records intact, integrity {self.integrity} after "
            "freeing space, the retry wrote its record"
        )


def disk_full(workdir: Path, size: str = TMPFS_SIZE) -> DiskFull:
    """Run the disk-full steps in a child in its own mount namespace; their outcome."""
    data_dir = workdir / "full"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "disk-full", str(data_dir), size]
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"disk-full steps failed: {result.stderr.strip()[-2000:]}")
    return DiskFull(**json.loads(result.stdout.splitlines()[-1]))


def _disk_full_steps(data_dir: Path, size: str) -> DiskFull:
    """Inside the private mount namespace: records, a full tmpfs, writes, then space again."""
    from krnet.core.model.settings import Settings
    from krnet.core.record.store import Store
    from krnet.errors import KrnetError

    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "krt-full", str(data_dir)],
        check=True,
    )
    plan = Settings().plan()
    with Store.open(data_dir) as store:
        for index in range(1, 4):
            store.allocate(_request(index), plan=plan, now=datetime.now(timezone.utc))
        kept_before = [record.hostname for record in store.runners()]
        filler = _fill(data_dir / "filler")
        error_type, error, writes = "", "", 0
        for index in range(4, 200):
            try:
                store.allocate(_request(index), plan=plan, now=datetime.now(timezone.utc))
                store.record_event("filler", "x" * 2000)
            except KrnetError as exc:
                error_type, error = type(exc).__name__, str(exc)
                break
            writes += 1
        read_while_full = [record.hostname for record in store.runners()]
        filler.unlink()
        sound = integrity(store.path)
        kept_after = [record.hostname for record in store.runners()]
        _, retried = store.allocate(_request(999), plan=plan, now=datetime.now(timezone.utc))
    return DiskFull(
        kept_before, writes, error_type, error, read_while_full, sound, kept_after, retried.hostname
    )


def _request(index: int) -> JoinRequest:
    from krnet.core.model.records import JoinRequest

    address = f"192.0.2.{index % 250 + 1}"
    return JoinRequest(f"{index:032x}", f"runner-{index}", address, 100, 4789, 1450)


def _fill(path: Path) -> Path:
    """Write `path` until the filesystem is full."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError:
        return path
    finally:
        os.close(descriptor)


# -- a database from a newer krnet ----------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """How `krnet serve` answered a database it must not touch."""

    mode: str
    returncode: int | None  # None: it did not exit (it started serving)
    stderr: str
    unchanged: bool  # the database file's bytes are as they were
    files: list[str]  # what the data dir holds afterwards

    def problems(self) -> list[str]:
        """Exit 1 with one line naming the revision and the fix; the file left as it was."""
        problems = []
        if self.returncode != 1:
            problems.append(f"serve ({self.mode}) exited {self.returncode}, not 1")
        if not self.stderr.startswith("krnet: ") or "Traceback" in self.stderr:
            problems.append(f"not one clear line: {self.stderr!r}")
        for phrase in (FUTURE_REVISION, "newer krnet", "left unchanged"):
            if phrase not in self.stderr:
                problems.append(f"the message does not say {phrase!r}: {self.stderr.strip()!r}")
        if not self.unchanged:
            problems.append("the database file changed")
        if self.files != ["krnet.db"]:
            problems.append(f"the data dir now holds {self.files}")
        return problems

    def line(self) -> str:
        state = "unchanged" if self.unchanged else "CHANGED"
        return f"serve ({self.mode}) exit {self.returncode}: {self.stderr.strip()}; file {state}"


def serve_on_newer_database(workdir: Path, mode: str = "host") -> Refusal:
    """Start `krnet serve` (overlay off, no root needed) on a database from a newer krnet."""
    from krnet.core.record.reader import database_path
    from tests.unit.test_migrations import digest, stamped

    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    path = stamped(database_path(data_dir), FUTURE_REVISION)
    before = digest(path)
    where = f'join_bind = "127.0.0.1"\njoin_port = {_free_port()}'
    if mode == "runner":
        where = 'host_address = "127.0.0.1"'
    config = workdir / "krnet.toml"
    token = "ab" * 32
    config.write_text(
        f'mode = "{mode}"\noverlay_enabled = false\njoin_token = "{token}"\n{where}\n'
    )
    argv = [sys.executable, "-m", "krnet", "--config", str(config), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*argv, "serve"],
        env=krnet_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=30)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        code = None
    return Refusal(mode, code, stderr, digest(path) == before, sorted(os.listdir(data_dir)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__" and sys.argv[1:2] == ["disk-full"]:
    print(json.dumps(asdict(_disk_full_steps(Path(sys.argv[2]), sys.argv[3]))))
