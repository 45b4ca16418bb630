"""The headless core: never imports textual (see tests/unit/test_layering.py)."""
