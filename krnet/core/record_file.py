"""Reads the record with the standard library alone, so `krnet node overlay` starts fast.

`krnet.core.store` (SQLAlchemy, SQLModel, Alembic) owns the schema and every write; this
module only reads a database already at `SCHEMA_HEAD` and answers None otherwise, so the
caller falls back to the store, which migrates or explains what is wrong.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from krnet.core.records import RunnerRecord

DATABASE_NAME = "krnet.db"
SCHEMA_HEAD = "0002_observed"  # the newest file in migrations/versions (a test keeps them equal)

_RUNNER_COLUMNS = [field.name for field in fields(RunnerRecord)]


def database_path(data_dir: Path) -> Path:
    """Where the record of a data dir lives."""
    return data_dir / DATABASE_NAME


def load_runners(path: Path) -> list[RunnerRecord]:
    """Every runner record: the fast read, else through the store (which migrates or explains)."""
    runners = read_runners(path)
    if runners is not None:
        return runners
    from krnet.core.store import Store

    with Store(path) as store:
        return store.runners()


def read_runners(path: Path) -> list[RunnerRecord] | None:
    """Every runner record ordered by id; [] without a database; None when the store must read."""
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            if revision != SCHEMA_HEAD:
                return None
            columns = ", ".join(_RUNNER_COLUMNS)
            rows = db.execute(f"SELECT {columns} FROM runner ORDER BY runner_id")
            return [_runner(row) for row in rows]
    except (sqlite3.Error, TypeError, ValueError):
        return None


def _runner(row: tuple[Any, ...]) -> RunnerRecord:
    values = dict(zip(_RUNNER_COLUMNS, row, strict=True))
    values["first_seen"] = _utc(values["first_seen"])
    values["last_seen"] = _utc(values["last_seen"])
    values["observed"] = dict(json.loads(values["observed"]))
    return RunnerRecord(**values)


def _utc(stored: str) -> datetime:
    """SQLAlchemy keeps UTC datetimes as naive ISO text in SQLite."""
    return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
