"""Reads the record with the standard library alone, so `krnet node overlay` starts fast.

`krnet.core.record.store` (SQLAlchemy, SQLModel, Alembic) owns the schema and every write; this
module never migrates or writes: it opens the file read-only, reads a database already at
`SCHEMA_HEAD`, and answers None otherwise (`krnet.core.record.load_runners` then falls back to
the store, which migrates or explains what is wrong).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from krnet.core.model.codec import decode_dataclass
from krnet.core.model.records import EventRecord, RunnerRecord
from krnet.core.model.runner_state import STATE_FILE, RunnerState

DATABASE_NAME = "krnet.db"
SCHEMA_HEAD = "0004_retired_keys"  # the newest in migrations/versions (a test keeps them equal)

Row = tuple[Any, ...]
T = TypeVar("T")

_RUNNER_COLUMNS = [field.name for field in fields(RunnerRecord)]


def database_path(data_dir: Path) -> Path:
    """Where the record of a data dir lives."""
    return data_dir / DATABASE_NAME


def read_runner_state(data_dir: Path) -> RunnerState | None:
    """What this runner's agent last published about itself; None when it published nothing."""
    try:
        return decode_dataclass(
            RunnerState, json.loads(data_dir.joinpath(STATE_FILE).read_text()), STATE_FILE
        )
    except (OSError, ValueError, TypeError):
        return None


def read_runners(path: Path) -> list[RunnerRecord] | None:
    """Every runner record ordered by id; [] without a database; None when the store must read."""
    columns = ", ".join(_RUNNER_COLUMNS)
    return _read(path, f"SELECT {columns} FROM runner ORDER BY runner_id", (), _runner)


def read_events(path: Path, limit: int) -> list[EventRecord] | None:
    """The latest `limit` events, newest first; [] without a database; None as `read_runners`."""
    query = "SELECT id, time, kind, runner_id, message FROM event ORDER BY id DESC LIMIT ?"
    return _read(path, query, (limit,), _event)


def _read(
    path: Path, query: str, parameters: tuple[object, ...], convert: Callable[[Row], T]
) -> list[T] | None:
    """`convert` over the rows of `query` on a database at head, opened read-only."""
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            if revision != SCHEMA_HEAD:
                return None
            return [convert(row) for row in db.execute(query, parameters)]
    except (sqlite3.Error, TypeError, ValueError):
        return None


def _runner(row: Row) -> RunnerRecord:
    values = dict(zip(_RUNNER_COLUMNS, row, strict=True))
    values["first_seen"] = _utc(values["first_seen"])
    values["last_seen"] = _utc(values["last_seen"])
    values["observed"] = dict(json.loads(values["observed"]))
    return RunnerRecord(**values)


def _event(row: Row) -> EventRecord:
    id_, time, kind, runner_id, message = row
    return EventRecord(id_, _utc(time), kind, runner_id, message)


def _utc(stored: str) -> datetime:
    """SQLAlchemy keeps UTC datetimes as naive ISO text in SQLite."""
    return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
