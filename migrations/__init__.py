"""Alembic migrations of the krnet record, shipped as the package `krnet.migrations`."""
