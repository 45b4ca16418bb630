"""Files that hold secrets or identities: modes fixed whatever existed before, temporary files
through mkstemp (no fixed name a planted symlink can redirect), the token written atomically."""

from __future__ import annotations

import logging
import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from krnet.core.dataplane.probe import RESULTS_FILE, read_results, write_results
from krnet.core.model.node_state import ProbeResult
from krnet.core.protocol.token import token_path, write_token
from krnet.core.record.store import Store
from tests.unit.test_setup_commands import Node, mode_of, node, run

__all__ = ["node"]  # a fixture used by name

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_an_existing_wide_data_dir_and_database_are_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    Store.open(data_dir).close()
    os.chmod(data_dir, 0o755)
    os.chmod(data_dir / "krnet.db", 0o644)
    with caplog.at_level(logging.WARNING), Store.open(data_dir):
        assert mode_of(data_dir) == 0o700
        assert mode_of(data_dir / "krnet.db") == 0o600
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("krnet.db was mode 644" in w and "made it 600" in w for w in warnings)
    assert any(f"{data_dir} was mode 755" in w for w in warnings)


def test_init_host_makes_the_data_dir_0700_even_when_it_existed_wider(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    node.data_dir.mkdir(parents=True, mode=0o755)
    os.chmod(node.data_dir, 0o755)
    code, _, _ = run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    assert code == 0
    assert mode_of(node.data_dir) == 0o700 and mode_of(node.token_file) == 0o600


def test_init_runner_takes_the_token_from_a_file(
    node: Node, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write_token(token_file, "ab" * 32)
    argv = ["init", "runner", "--host-address", "192.0.2.10", "--join-token-file", str(token_file)]
    code, _, _ = run(capsys, *argv)
    assert code == 0
    written = tomllib.loads(node.config.read_text())
    assert written["join_token_file"] == str(token_file) and "join_token" not in written


def plant_symlinks(directory: Path, name: str, victim: Path) -> None:
    """Symlinks at every fixed temporary name a writer of `name` might use."""
    for fixed in (f"{name}.tmp", f".{name}.tmp", Path(name).with_suffix(".tmp").name):
        (directory / fixed).unlink(missing_ok=True)
        (directory / fixed).symlink_to(victim)


def test_probe_results_never_follow_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    plant_symlinks(data_dir, RESULTS_FILE, victim)
    result = ProbeResult(1, 3, 3, 0.2, NOW, small_sent=3, small_received=3)
    write_results(data_dir / RESULTS_FILE, {1: result}, NOW)
    assert victim.read_text() == "untouched"
    assert not (data_dir / RESULTS_FILE).is_symlink()
    assert read_results(data_dir / RESULTS_FILE, NOW, 3600)[1].received == 3
    leftovers = {p.name for p in data_dir.iterdir() if not p.is_symlink()}
    assert leftovers == {RESULTS_FILE}


def test_the_token_is_written_atomically_and_never_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    data_dir = tmp_path / "data"
    path = token_path(data_dir)
    first = write_token(path)
    plant_symlinks(data_dir, path.name, victim)
    inode = path.stat().st_ino
    second = write_token(path)
    assert victim.read_text() == "untouched"
    assert path.read_text() == second + "\n" and second != first
    assert path.stat().st_ino != inode  # a new file renamed over the old: never half-written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    leftovers = {p.name for p in data_dir.iterdir() if not p.is_symlink()}
    assert leftovers == {path.name}
