"""The record under faults: locked by another process, a full disk, a database from a newer krnet.

Each fault must end in one clear error naming the file and the fix, never a traceback, a lost
record or a changed file. The lab side (a running host refusing and then serving joins) is in
tests/lab/test_faults.py; the steps themselves are shared with scripts/faults.py.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from krnet.core.model.records import JoinRequest
from krnet.core.model.settings import Settings
from krnet.core.record.reader import database_path
from krnet.core.record.store import Store
from krnet.errors import StoreError
from scripts import fault_store
from tests.support import require_privileged

PLAN = Settings().plan()


def request(index: int) -> JoinRequest:
    return JoinRequest(f"{index:032x}", f"runner-{index}", f"192.0.2.{10 + index}", 100, 4789, 1450)


def with_runners(data_dir: Path, count: int) -> Path:
    with Store.open(data_dir) as store:
        for index in range(1, count + 1):
            store.allocate(request(index), plan=PLAN, now=datetime.now(timezone.utc))
    return database_path(data_dir)


# -- locked by another process ------------------------------------------------------------------


def test_a_write_under_another_process_lock_fails_clearly_and_the_retry_succeeds(
    tmp_path: Path,
) -> None:
    path = with_runners(tmp_path, 2)
    with Store(path, busy_timeout=0.2) as store:
        before, events = store.runners(), store.events()
        with fault_store.locked(path):
            with pytest.raises(StoreError) as caught:
                store.allocate(request(3), plan=PLAN, now=datetime.now(timezone.utc))
            assert store.runners() == before  # readers are not shut out in WAL mode
        message = str(caught.value)
        assert str(path) in message and "locked by another process" in message
        assert "nothing was changed" in message and "retry" in message
        assert (store.runners(), store.events()) == (before, events)
        _, record = store.allocate(request(3), plan=PLAN, now=datetime.now(timezone.utc))
        assert record.runner_id == 3
        assert [r.hostname for r in store.runners()] == ["runner-1", "runner-2", "runner-3"]


def test_status_commands_read_through_a_writers_lock(tmp_path: Path) -> None:
    with_runners(tmp_path, 2)
    outcome = fault_store.commands_under_lock(tmp_path, readers_too=False)
    assert outcome.problems() == []
    assert '"total": 2' in outcome.results[0][1]


def test_status_commands_name_a_lock_that_shuts_readers_out(tmp_path: Path) -> None:
    """Both wait out the busy timeout (10 s) side by side, then say who holds the file."""
    path = with_runners(tmp_path, 1)
    outcome = fault_store.commands_under_lock(tmp_path, readers_too=True)
    assert outcome.problems() == []
    assert fault_store.integrity(path) == "ok"


# -- disk full ----------------------------------------------------------------------------------


@pytest.mark.privileged
def test_a_full_disk_gives_a_clear_error_and_corrupts_nothing(tmp_path: Path) -> None:
    """A 300 KiB tmpfs as the data dir, mounted in a child's private mount namespace."""
    require_privileged("unshare", "mount")
    outcome = fault_store.disk_full(tmp_path)
    assert outcome.problems() == []
    assert outcome.kept_before == ["runner-1", "runner-2", "runner-3"]


# -- a database from a newer krnet --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["host", "runner"])
def test_serve_refuses_a_database_from_a_newer_krnet_and_leaves_it_unchanged(
    tmp_path: Path, mode: str
) -> None:
    assert fault_store.serve_on_newer_database(tmp_path, mode).problems() == []
