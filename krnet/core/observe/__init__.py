"""Reading a node: one-pass snapshot gathering, `node overlay` status, and diagnosis.

Read-only: nothing here writes the kernel or the record. The TUI and the status commands read
through this package.
"""
