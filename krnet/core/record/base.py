"""The store's engine and transactions: what every part of the record (`Store` and the parts it
is built from) writes and reads through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from sqlmodel import Session

from krnet.core.record.database import BEGIN_MODE, BUSY_TIMEOUT, explained, migrate, open_engine

_Self = TypeVar("_Self", bound="StoreBase")


class StoreBase:
    """One SQLite file, migrated on open; safe to share between threads."""

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._engine = open_engine(path, busy_timeout)
        try:
            with self._explained():
                self.migration = migrate(self._engine, path)
        except BaseException:
            self._engine.dispose()
            raise

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: BEGIN IMMEDIATE for writes, committed on success."""
        mode = "IMMEDIATE" if write else "DEFERRED"
        with self._explained(), Session(self._engine, expire_on_commit=False) as session:
            session.connection(execution_options={BEGIN_MODE: mode})
            yield session
            if write:
                session.commit()

    def _explained(self) -> AbstractContextManager[None]:
        return explained(self.path, self.busy_timeout)
