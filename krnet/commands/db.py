"""`krnet db upgrade | current | backup FILE`: maintenance of the SQLite record."""

from __future__ import annotations

import argparse
from pathlib import Path

from krnet.config import data_dir_path
from krnet.core.record.reader import database_path
from krnet.errors import StoreError


def run_upgrade(args: argparse.Namespace) -> int:
    """Apply pending migrations and say from which revision to which."""
    from krnet.core.record.store import Store

    with Store.open(data_dir_path(args)) as store:
        before, after = store.migration.before, store.migration.after
        if before == after:
            print(f"{store.path}: already at {after} (head)")
        else:
            print(f"{store.path}: {before or 'empty'} -> {after}")
    return 0


def run_current(args: argparse.Namespace) -> int:
    """Print the schema revision without changing (or creating) the database."""
    from krnet.core.record.database import schema_state

    path = database_path(data_dir_path(args))
    state = schema_state(path)
    if not state.known:
        raise StoreError(
            f"{path} is at revision {state.current}, unknown to this krnet (newest known: "
            f"{state.head}): it was written by a newer krnet; use that one"
        )
    if state.current is None:
        where = "no database yet" if not path.exists() else "no schema yet"
        print(f"none ({where} at {path}; `krnet db upgrade` creates {state.head})")
    elif state.current == state.head:
        print(f"{state.current} (head)")
    else:
        print(f"{state.current} (head is {state.head}: run `krnet db upgrade`)")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    """Copy the record consistently, even while `krnet serve` writes to it."""
    from krnet.core.record.store import Store

    dest = Path(args.file)
    data_dir = data_dir_path(args)
    if not database_path(data_dir).exists():
        raise StoreError(f"no database at {database_path(data_dir)} to back up: check --data-dir")
    with Store.open(data_dir) as store:
        store.backup(dest)
        print(f"backed up {store.path} ({store.migration.after}) to {dest}")
    return 0
