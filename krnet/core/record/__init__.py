"""The record of who owns which runner id: the SQLite store (SQLModel tables and Alembic
migrations), and a read-only reader for status paths that never migrates or writes.

Builds on `model` only. `reader` is the standard library alone and never imports `store`; the
store (heavy) imports the reader's paths. `load_runners` joins the two for the status paths.
"""

from __future__ import annotations

from pathlib import Path

from krnet.core.model.records import RunnerRecord
from krnet.core.record.reader import read_runners


def load_runners(path: Path) -> list[RunnerRecord]:
    """Every runner record: the fast read, else through the store (which migrates or explains)."""
    runners = read_runners(path)
    if runners is not None:
        return runners
    from krnet.core.record.store import Store

    with Store(path) as store:
        return store.runners()
