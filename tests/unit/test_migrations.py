"""Alembic migrations: from nothing, from the first revision, and databases krnet must refuse."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from krnet.cli import main
from krnet.core.record import load_runners
from krnet.core.record.database import alembic_config, migrations_dir, open_engine
from krnet.core.record.reader import SCHEMA_HEAD, database_path, read_runners
from krnet.core.record.store import Store
from krnet.errors import StoreError

FIRST = "0001_initial"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upgrade_to(path: Path, revision: str) -> None:
    """Migrate a database to one given revision, as an older krnet would have left it."""
    engine = open_engine(path, 10.0)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def stamped(path: Path, revision: str) -> Path:
    """A database at head whose revision is then set to `revision`, in rollback-journal mode."""
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    db.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    return path


def test_schema_head_names_the_newest_migration() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_current_head() == SCHEMA_HEAD
    assert [rev.revision for rev in script.walk_revisions()] == [
        SCHEMA_HEAD,
        "0003_runner_keys",
        "0002_observed",
        FIRST,
    ]
    assert (migrations_dir() / "env.py").is_file()


def test_an_empty_file_is_migrated_to_head_and_matches_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "krnet.db"
    path.touch()
    with Store(path) as store:
        assert (store.migration.before, store.migration.after) == (None, SCHEMA_HEAD)
    engine = open_engine(path, 10.0)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {
                "alembic_version",
                "runner",
                "event",
                "retired_key",
            }
            assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    finally:
        engine.dispose()


def test_data_written_at_the_first_revision_survives_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "krnet.db"
    upgrade_to(path, FIRST)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO runner (runner_id, identity, hostname, physical_ip, vni, subnet, status,"
            " first_seen, last_seen, vxlan_id, vxlan_port, mtu) VALUES (3, NULL, 'runner-c',"
            " '192.0.2.30', 103, '10.3.0.0/16', 'active', '2026-11-28 01:02:03.000000',"
            " '2026-11-28 01:02:04.000000', 100, 4789, 1450)"
        )
        db.execute(
            "INSERT INTO event (time, kind, runner_id, message)"
            " VALUES ('2026-11-28 01:02:03.000000', 'join', 3, 'runner 3 joined')"
        )
    db.close()
    assert read_runners(path) is None  # behind head: the fast reader leaves it to the store
    with Store(path) as store:
        assert (store.migration.before, store.migration.after) == (FIRST, SCHEMA_HEAD)
        (runner,) = store.runners()
        assert (runner.runner_id, runner.hostname, runner.subnet, runner.observed) == (
            3,
            "runner-c",
            "10.3.0.0/16",
            {},
        )
        assert runner.last_seen.isoformat() == "2026-11-28T01:02:04+00:00"
        assert [e.message for e in store.events()] == ["runner 3 joined"]
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(event)")}
    db.close()
    assert "ix_event_time" in indexes


def test_a_revision_from_a_newer_krnet_is_refused_and_the_file_left_unchanged(
    tmp_path: Path,
) -> None:
    path = stamped(tmp_path / "krnet.db", "9999_future")
    before = digest(path)
    with pytest.raises(
        StoreError, match=r"revision 9999_future, unknown to krnet .*left unchanged"
    ):
        Store(path)
    with pytest.raises(StoreError, match="9999_future"):
        load_runners(path)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["krnet.db"]


def test_a_file_that_is_not_a_database_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "krnet.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    before = digest(path)
    with pytest.raises(StoreError) as caught:
        Store(path)
    message = str(caught.value)
    assert str(path) in message and "krnet db backup" in message and "move it aside" in message
    assert read_runners(path) is None
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        load_runners(path)
    assert digest(path) == before


def test_a_foreign_sqlite_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "krnet.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    db.close()
    before = digest(path)
    with pytest.raises(StoreError, match=r"holds tables \(photos\).*not a krnet database"):
        Store(path)
    assert digest(path) == before


def _open(path: str) -> str | None:
    with Store(Path(path)) as store:
        return store.migration.before


def test_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "krnet.db"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        befores = pool.map(_open, [str(path)] * 4)
    assert (befores.count(None), befores.count(SCHEMA_HEAD)) == (1, 3)
    with Store(path) as store:
        assert store.revision() == SCHEMA_HEAD


# --- `krnet db ...` through the command line ------------------------------------------------


def db(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data_dir), "db", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_db_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    code, out, _ = db(capsys, data_dir, "current")
    assert (code, out.split()[0]) == (0, "none")
    code, _, err = db(capsys, data_dir, "backup", str(tmp_path / "nothing.db"))
    assert code == 1 and "no database at" in err
    assert not data_dir.exists()
    assert db(capsys, data_dir, "upgrade")[:2] == (
        0,
        f"{database_path(data_dir)}: empty -> {SCHEMA_HEAD}\n",
    )
    assert db(capsys, data_dir, "upgrade")[1].endswith(f"already at {SCHEMA_HEAD} (head)\n")
    assert db(capsys, data_dir, "current")[:2] == (0, f"{SCHEMA_HEAD} (head)\n")
    backup = tmp_path / "backup.db"
    code, out, _ = db(capsys, data_dir, "backup", str(backup))
    assert code == 0 and str(backup) in out
    assert Store(backup).revision() == SCHEMA_HEAD
    code, _, err = db(capsys, data_dir, "backup", str(backup))
    assert code == 1 and err.startswith("krnet: ") and "already exists" in err


def test_db_current_and_upgrade_from_the_first_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade_to(database_path(tmp_path), FIRST)
    assert db(capsys, tmp_path, "current")[1] == (
        f"{FIRST} (head is {SCHEMA_HEAD}: run `krnet db upgrade`)\n"
    )
    assert db(capsys, tmp_path, "upgrade")[1].endswith(f"{FIRST} -> {SCHEMA_HEAD}\n")


def test_db_commands_refuse_a_newer_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stamped(database_path(tmp_path), "9999_future")
    before = digest(path)
    for command_args in (["current"], ["upgrade"], ["backup", str(tmp_path / "b.db")]):
        code, out, err = db(capsys, tmp_path, *command_args)
        assert (code, out) == (1, "")
        assert "9999_future" in err and "Traceback" not in err
    assert digest(path) == before
    assert not (tmp_path / "b.db").exists()
