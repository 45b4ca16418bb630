"""Alembic revisions of the krnet record, oldest first by revision id."""
