"""The config readers bound what they are fed: every hostile input is one ConfigError naming
the file and the line, never a MemoryError, RecursionError or traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_config import home, reference, refusal, toml

__all__ = ["home"]  # a fixture used by name

CHAINS = {
    "unary minus": "OVERLAY_MTU = " + "-" * 100_000 + "1\n",
    "not": "OVERLAY_ENABLED = " + "not " * 100_000 + "True\n",
    "plus": "OVERLAY_MTU = " + "+".join(["1"] * 100_000) + "\n",
    "split over lines": "OVERLAY_MTU = (\n" + "-\n" * 50_000 + "1)\n",
    "nested brackets": "OVERLAY_MTU = " + "[" * 100_000 + "]" * 100_000 + "\n",
}


@pytest.mark.parametrize("text", CHAINS.values(), ids=CHAINS.keys())
def test_long_chains_are_one_error_with_file_and_line(home: Path, text: str) -> None:
    path = reference(
        home, "host", '"""KohakuRiver host settings."""\nOVERLAY_VXLAN_ID = 100\n' + text
    )
    message = refusal(home)
    assert message.startswith(f"{path}:3: ")


def test_a_short_expression_is_still_the_literal_error(home: Path) -> None:
    path = reference(home, "host", "OVERLAY_MTU = 1400 + 50\n")
    message = refusal(home)
    assert message.startswith(f"{path}:1: OVERLAY_MTU is set to an expression (1400 + 50)")


def test_a_file_larger_than_the_bound_is_refused(home: Path) -> None:
    path = reference(home, "host", "# padding\n" * 200_000)  # 2 MB: twice the bound
    message = refusal(home)
    assert str(path) in message and "larger than 1048576 bytes" in message


def test_deeply_nested_toml_is_one_error(home: Path) -> None:
    path = toml(home, "overlay_mtu = " + "[" * 100_000 + "]" * 100_000 + "\n")
    message = refusal(home)
    assert message.startswith(f"{path}: ")
