"""The headless core of krnet, in packages by layer, lowest first.

`model` (values and pure rules) is imported by every other layer and imports none of them;
`protocol`, `record` and `dataplane` build on `model` only; `control` (the host service and the
runner agent) ties them together; `observe` reads a node's whole state for status, diagnosis and
the TUI. `tests/unit/test_layering.py` keeps these contracts.
"""
