"""Opening the SQLite file: engine settings, schema migrations, and errors a person can act on.

Transactions begin with the SQLite mode the caller names (execution option `BEGIN_MODE`),
because the sqlite3 driver's own implicit BEGIN cannot take the write lock up front.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from krnet import __version__
from krnet.errors import StoreError

# Alembic logs its plugin set-up at import and its context at INFO: noise to an operator.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from alembic.util import CommandError  # noqa: E402

BEGIN_MODE = "krnet_begin"  # execution option: "IMMEDIATE" takes the write lock at BEGIN
BUSY_TIMEOUT = 10.0  # seconds a writer waits for another writer before giving up

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """What opening a database did to its schema revision."""

    before: str | None
    after: str


@dataclass(frozen=True)
class SchemaState:
    """A database's revision as found, and the newest this krnet knows."""

    current: str | None
    head: str
    known: bool


def open_engine(path: Path, busy_timeout: float) -> Engine:
    """An engine on `path` with a busy timeout, foreign keys, and caller-chosen BEGIN modes."""
    engine = create_engine(
        URL.create("sqlite", database=str(path)), connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(driver: sqlite3.Connection, _record: object) -> None:
        driver.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        driver.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        driver.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(BEGIN_MODE, "")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def explained(path: Path, busy_timeout: float) -> Iterator[None]:
    """Turn driver and migration failures into one StoreError naming the file and the fix."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise _explain(path, busy_timeout, exc) from exc
    except CommandError as exc:
        raise StoreError(f"{path}: migration failed: {exc}") from exc


def migrate(engine: Engine, path: Path) -> Migration:
    """Bring the schema to head in one BEGIN IMMEDIATE transaction, refusing unknown databases."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    head = _head(script)
    with engine.connect() as connection:
        before = _checked_revision(path, connection, script)
        connection.rollback()
        _ensure_wal(connection)
        if before == head:
            return Migration(before, head)
        connection.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
        with connection.begin():
            before = _checked_revision(path, connection, script)  # another process may have won
            if before != head:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
    if before != head:
        log.info("migrated %s from %s to %s", path, before or "empty", head)
    return Migration(before, head)


def schema_state(path: Path) -> SchemaState:
    """The revision of a database, read without changing or creating anything."""
    script = ScriptDirectory.from_config(alembic_config())
    head = _head(script)
    if not path.exists():
        return SchemaState(None, head, known=True)
    engine = open_engine(path, BUSY_TIMEOUT)
    try:
        with explained(path, BUSY_TIMEOUT), engine.connect() as connection:
            current = current_revision(connection)
    finally:
        engine.dispose()
    return SchemaState(current, head, known=current is None or _is_known(script, current))


def current_revision(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads[0] if heads else None


def migrations_dir() -> Path:
    """The Alembic folder: packaged as krnet.migrations, or `migrations/` in a source tree."""
    try:
        return Path(str(resources.files("krnet.migrations")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    """An Alembic config on krnet's migrations; env.py runs on `attributes["connection"]`."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    return config


def _head(script: ScriptDirectory) -> str:
    head = script.get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {migrations_dir()}: this krnet is incomplete")
    return head


def _is_known(script: ScriptDirectory, revision: str) -> bool:
    return revision in {rev.revision for rev in script.walk_revisions()}


def _checked_revision(path: Path, connection: Connection, script: ScriptDirectory) -> str | None:
    """The current revision, or StoreError for a database this krnet must not touch."""
    current = current_revision(connection)
    if current is None:
        tables = inspect(connection).get_table_names()
        if tables:
            raise StoreError(
                f"{path} holds tables ({', '.join(sorted(tables))}) but no krnet schema revision: "
                "it is not a krnet database; point --data-dir elsewhere or move the file aside"
            )
    elif not _is_known(script, current):
        raise StoreError(
            f"{path} has schema revision {current}, unknown to krnet {__version__} (written by a "
            "newer krnet?); left unchanged: run that newer krnet, or restore a `krnet db backup`"
        )
    return current


def _ensure_wal(connection: Connection) -> None:
    """Switch to WAL (it persists in the file) outside any transaction."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    (mode,) = driver.execute("PRAGMA journal_mode").fetchone()
    if mode != "wal":
        driver.execute("PRAGMA journal_mode=WAL")


def _explain(path: Path, busy_timeout: float, exc: BaseException) -> StoreError:
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).lower()
    if "locked" in text or "busy" in text:
        return StoreError(
            f"{path} is locked by another process (waited {busy_timeout:g} s); nothing was "
            "changed: retry, or stop the other program writing to it"
        )
    if "disk is full" in text:
        return StoreError(
            f"{path}: the disk is full ({cause}); nothing was changed: free space on the "
            f"filesystem of {path.parent}, then retry"
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(
            f"{path} is not a readable SQLite database ({cause}): restore it from a "
            "`krnet db backup` copy, or move it aside to start an empty record"
        )
    if "unable to open" in text:
        return StoreError(
            f"cannot open {path} ({cause}): check that its directory exists and is writable "
            "(--data-dir or KRNET_DATA_DIR)"
        )
    if "readonly" in text:
        return StoreError(f"{path} is read-only ({cause}): run krnet as the user owning it")
    return StoreError(f"{path}: {cause}")
