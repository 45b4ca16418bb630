"""Diagnosis: pure checks over a `NodeSnapshot`, each a pass/warn/fail line with its fix.

The one mismatch engine: `krnet doctor`, the TUI and `krnet node overlay` all read it.
"""
