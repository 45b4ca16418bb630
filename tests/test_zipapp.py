"""The built zipapp, as users run it: what ships is what is tested.

Runs `dist/krnet.pyz` with `python -S` (the standard library only: nothing installed beside the
interpreter can stand in for a dependency the zipapp lacks), from a directory outside the source
tree, with no KRNET_* settings and a private HOME and SHIV_ROOT. Skipped when the zipapp is
missing, except in CI (KRNET_REQUIRE_PRIVILEGED=1), which always builds it first.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from krnet import __version__
from krnet.core.model.settings import Settings
from krnet.core.record.reader import SCHEMA_HEAD, database_path
from tests.support import ZIPAPP, require_privileged, require_zipapp

ROOT = Path(__file__).resolve().parents[1]
CLEAN_MACHINE_SCRIPT = ROOT / "scripts" / "check-clean-machine.sh"
HEAVY = {"textual", "docker", "pyroute2", "sqlalchemy", "sqlmodel", "alembic"}


@pytest.fixture(scope="module")
def zipapp_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment with no krnet settings; the zipapp extracts once, into a private dir."""
    require_zipapp()
    home = tmp_path_factory.mktemp("home")
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KRNET_", "XDG_", "PYTHON", "SHIV_"))
    }
    return environ | {"HOME": str(home), "SHIV_ROOT": str(home / "shiv")}


def krnet(
    environ: dict[str, str],
    cwd: Path,
    *args: str,
    python_options: tuple[str, ...] = (),
    interpreter: str = sys.executable,
) -> subprocess.CompletedProcess[str]:
    """Run the zipapp; exit code and output are the caller's to check."""
    return subprocess.run(
        [interpreter, "-S", *python_options, str(ZIPAPP), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_names_the_release_this_interpreter_and_every_target_carried(
    zipapp_env: dict[str, str], tmp_path: Path
) -> None:
    result = krnet(zipapp_env, tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"krnet {__version__} on CPython {platform.python_version()}, Linux {platform.machine()}, "
    )
    assert result.stdout.endswith(
        "; carries CPython 3.10 3.11 3.12 3.13 3.14 on x86_64, aarch64 (glibc 2.17 or newer)\n"
    )
    assert result.stdout.count("\n") == 1


# Interpreters this machine has that the zipapp does not serve (pyenv keeps old ones).
OLD_PYTHONS = sorted(Path("/root/.pyenv/versions").glob("3.[789].*/bin/python"))


@pytest.mark.parametrize("python", OLD_PYTHONS, ids=lambda path: path.parts[-3])
def test_an_interpreter_it_does_not_serve_gets_one_line_and_exit_code_2(
    zipapp_env: dict[str, str], tmp_path: Path, python: Path
) -> None:
    """Python 3.7 to 3.9: what was found, what is needed, what to do; no traceback."""
    version = python.parts[-3]
    for args in (["--version"], ["node", "overlay", "--json"], ["serve"]):
        result = krnet(zipapp_env, tmp_path, *args, interpreter=str(python))
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == (
            f"krnet: found CPython {version}, Linux {platform.machine()}, glibc "
            f"{platform.libc_ver()[1]}; krnet.pyz needs CPython 3.10 3.11 3.12 3.13 3.14 on "
            "x86_64, aarch64 (glibc 2.17 or newer): install python3.11 and run "
            "`python3.11 krnet.pyz`\n"
        )


def test_db_upgrade_migrates_a_fresh_data_dir_to_head_with_the_zipapps_migrations(
    zipapp_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    upgrade = krnet(zipapp_env, tmp_path, "--data-dir", str(data_dir), "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"empty -> {SCHEMA_HEAD}" in upgrade.stdout
    current = krnet(zipapp_env, tmp_path, "--data-dir", str(data_dir), "db", "current")
    assert (current.returncode, current.stdout) == (0, f"{SCHEMA_HEAD} (head)\n"), current.stderr
    with sqlite3.connect(database_path(data_dir)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]


def test_config_show_json_lists_every_setting_with_its_source(
    zipapp_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "krnet.toml"
    config.write_text("overlay_mtu = 1400\n")
    environ = zipapp_env | {"KRNET_OVERLAY_VXLAN_PORT": "4790"}
    result = krnet(environ, tmp_path, "--config", str(config), "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["config_file"] == str(config)
    assert set(shown["settings"]) == {field.name for field in fields(Settings)}
    assert shown["settings"]["overlay_host_ip"] == {"value": "10.0.0.1", "source": "default"}
    assert shown["settings"]["overlay_mtu"] == {"value": 1400, "source": str(config)}
    assert shown["settings"]["overlay_vxlan_port"] == {
        "value": 4790,
        "source": "env KRNET_OVERLAY_VXLAN_PORT",
    }


def test_node_overlay_json_on_an_empty_data_dir(zipapp_env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = krnet(zipapp_env, tmp_path, "--data-dir", str(data_dir), "node", "overlay", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["mode"], status["host_overlay_ip"], status["max_runners"]) == (
        "host",
        "10.0.0.1/8",
        255,
    )
    assert (status["total"], status["available_ids"], status["runners"]) == (0, 255, [])
    assert not data_dir.exists()


def test_help_imports_no_heavy_dependency(zipapp_env: dict[str, str], tmp_path: Path) -> None:
    result = krnet(zipapp_env, tmp_path, "--help", python_options=("-X", "importtime"))
    assert result.returncode == 0 and "node" in result.stdout, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "argparse" in imported  # the probe sees what krnet.cli imports
    assert imported & HEAVY == set()


@pytest.mark.privileged
# The aarch64 cell runs under qemu: 12 minutes on a quiet machine, 29 on a loaded one.
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    os.environ.get("KRNET_CLEAN_MACHINE_CHECK") != "1",
    reason="opt-in: set KRNET_CLEAN_MACHINE_CHECK=1 (debootstraps four Debian roots once)",
)
def test_zipapp_runs_on_every_clean_machine_of_the_matrix(zipapp_env: dict[str, str]) -> None:
    """scripts/check-clean-machine.sh: only python3 in each cell, only the zipapp copied in."""
    require_privileged("debootstrap", "chroot", "unshare", "mount", "qemu-aarch64-static")
    result = subprocess.run(
        [str(CLEAN_MACHINE_SCRIPT), str(ZIPAPP)],
        capture_output=True,
        text=True,
        timeout=3500,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS  ") == 6, result.stdout
    assert result.stdout.rstrip().endswith(": 6 passed, 0 failed"), result.stdout
