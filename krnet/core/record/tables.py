"""The SQLModel tables of the record (heavy: imported only with `krnet.core.record.store`).

Datetimes must be timezone-aware: SQLModel stores them as UTC and returns them aware.
Changing a table means a new revision in migrations/versions (a test compares the two).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class RunnerRow(SQLModel, table=True):
    """A runner id and who holds it."""

    __tablename__ = "runner"

    runner_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    identity_hash: str | None = Field(default=None, index=True)  # SHA-256 of the identity
    runner_key: str | None = None  # the per-runner key of an enrolled runner (never sent again)
    hostname: str = Field(index=True)
    physical_ip: str
    vni: int
    subnet: str
    status: str
    first_seen: datetime
    last_seen: datetime
    vxlan_id: int
    vxlan_port: int
    mtu: int
    observed: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}")
    )


class EventRow(SQLModel, table=True):
    """One line of the event log."""

    __tablename__ = "event"

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = Field(index=True)
    kind: str
    runner_id: int | None = None
    message: str


class RetiredKeyRow(SQLModel, table=True):
    """The key of a runner whose record went (id reclaimed, released, left): when it comes
    back the host still proves itself with it, and enrols that runner afresh."""

    __tablename__ = "retired_key"

    identity_hash: str = Field(primary_key=True)  # SHA-256 of the runner's identity
    runner_key: str
    retired_at: datetime = Field(index=True)
