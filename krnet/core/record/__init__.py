"""The record of who owns which runner id: the SQLite store (SQLModel tables and Alembic
migrations), and a read-only reader for status paths that never migrates or writes.

Builds on `model` only.
"""
