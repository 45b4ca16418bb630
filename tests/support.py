"""Shared test helpers: privileged tests skip on a bare machine but fail in CI."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from krnet.lab.prerequisites import missing_prerequisites


def privileged_required() -> bool:
    """True where CI demands that root-only tests run (KRNET_REQUIRE_PRIVILEGED=1)."""
    return os.environ.get("KRNET_REQUIRE_PRIVILEGED") == "1"


def require_privileged(*tools: str) -> None:
    """Skip (or, in CI, fail) unless we are root and every named tool is installed."""
    reason = missing_prerequisites(tools)
    if reason is None:
        return
    if privileged_required():
        pytest.fail(f"KRNET_REQUIRE_PRIVILEGED=1 but this test cannot run: {reason}")
    pytest.skip(reason)


ZIPAPP = Path(__file__).resolve().parents[1] / "dist" / "krnet.pyz"


def require_zipapp() -> Path:
    """The built zipapp; skip without it (fail in CI, which always builds it first)."""
    if ZIPAPP.exists():
        return ZIPAPP
    message = f"{ZIPAPP} is missing: run ./build.sh first"
    if privileged_required():
        pytest.fail(message)
    pytest.skip(message)


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH: (status, body), error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
