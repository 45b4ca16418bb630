"""Alembic environment: runs on the connection `krnet.core.record.store` opened and locked.

The store checks the revision, begins `BEGIN IMMEDIATE` and passes its connection in
`config.attributes["connection"]`; Alembic then runs inside that transaction, so a failed
migration leaves the file as it was. There is no offline (--sql) mode and no alembic.ini:
`krnet db upgrade` is the way in. A new revision goes in versions/ (from script.py.mako),
and `krnet.core.record.reader.SCHEMA_HEAD` names it.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import krnet.core.record.tables  # noqa: F401  (defines the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("krnet migrations run through krnet.core.record.store (`krnet db upgrade`)")
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
