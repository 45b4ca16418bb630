"""`krnet install` / `uninstall` into a scratch root, the unit they write, and the default paths.

No root needed: install runs with `--root` (systemctl is then never called), and the default
paths are computed from an explicit environ and uid. `systemd-analyze verify` checks the unit
for real (it runs without a running systemd).
"""

from __future__ import annotations

import configparser
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from krnet.cli import main
from krnet.commands.systemd import CAPABILITIES, render_unit
from krnet.config import config_path, data_dir_path, default_layout, system_wide
from tests.support import privileged_required, require_zipapp


def files_under(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*")}


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


@pytest.fixture
def zipapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny executable zipapp that krnet believes it runs from."""
    path = tmp_path / "dist" / "krnet.pyz"
    path.parent.mkdir()
    with path.open("wb") as out:
        out.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("__main__.py", "print('krnet')\n")
    path.chmod(0o755)
    monkeypatch.setattr("sys.argv", [str(path)])
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- default paths ----------------------------------------------------------------------------


def test_as_root_the_defaults_are_the_systems_dirs() -> None:
    for environ in ({"HOME": "/root"}, {}):
        assert system_wide(environ, uid=0)
        assert config_path(environ=environ, uid=0) == (Path("/etc/krnet/krnet.toml"), None)
        assert data_dir_path(environ=environ, uid=0) == Path("/var/lib/krnet")
        assert default_layout(environ, uid=0) == "system"


def test_as_a_normal_user_the_defaults_stay_the_user_dirs() -> None:
    environ = {"HOME": "/home/alice"}
    assert config_path(environ=environ, uid=1000) == (
        Path("/home/alice/.config/krnet/krnet.toml"),
        None,
    )
    assert data_dir_path(environ=environ, uid=1000) == Path("/home/alice/.local/share/krnet")
    assert default_layout(environ, uid=1000) == "user"
    xdg = environ | {"XDG_DATA_HOME": "/srv/alice"}
    assert data_dir_path(environ=xdg, uid=1000) == Path("/srv/alice/krnet")


def test_root_with_home_pointed_elsewhere_gets_a_user_layout_there() -> None:
    environ = {"HOME": "/tmp/lab/home"}
    assert not system_wide(environ, uid=0)
    assert data_dir_path(environ=environ, uid=0) == Path("/tmp/lab/home/.local/share/krnet")


def test_flags_and_environment_still_win_as_root(tmp_path: Path) -> None:
    environ = {"HOME": "/root", "KRNET_CONFIG": str(tmp_path / "k.toml")}
    environ["KRNET_DATA_DIR"] = str(tmp_path / "data")
    assert config_path(environ=environ, uid=0) == (tmp_path / "k.toml", "KRNET_CONFIG")
    assert data_dir_path(environ=environ, uid=0) == tmp_path / "data"


def test_config_show_says_which_defaults_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    assert "defaults:    user (platformdirs' user config and data dirs)" in out.splitlines()
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.setattr("os.geteuid", lambda: 0)
    (tmp_path / "krnet.toml").write_text('mode = "host"\n')
    monkeypatch.setenv("KRNET_CONFIG", str(tmp_path / "krnet.toml"))  # never read /etc here
    monkeypatch.setenv("KRNET_DATA_DIR", str(tmp_path / "data"))
    code, out, _ = run(capsys, "config", "show")
    assert "defaults:    system (/etc/krnet, /var/lib/krnet: run as root)" in out.splitlines()


# --- install / uninstall ---------------------------------------------------------------------


def test_install_writes_exactly_the_files_it_says(
    zipapp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, out, err = run(capsys, "install", "--root", str(root))
    assert code == 0, err
    binary = root / "usr/local/bin/krnet"
    unit_file = root / "etc/systemd/system/krnet.service"
    assert out.splitlines()[:2] == [f"wrote {binary}", f"wrote {unit_file}"]
    assert {root / path for path in files_under(root) if (root / path).is_file()} == {
        binary,
        unit_file,
    }
    assert binary.read_bytes() == zipapp.read_bytes()
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert "systemctl daemon-reload && systemctl enable --now krnet.service" in out
    service = unit_sections(unit_file.read_text())["Service"]
    assert service["ExecStart"] == (
        "/usr/local/bin/krnet --config /etc/krnet/krnet.toml --data-dir /var/lib/krnet serve"
    )
    assert service["StateDirectory"] == service["ConfigurationDirectory"] == "krnet"
    assert service["ProtectHome"] == "yes" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "full"
    assert service["CapabilityBoundingSet"] == "CAP_NET_ADMIN CAP_NET_RAW"
    assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"]


def test_prefix_moves_the_binary_and_the_unit_follows(
    zipapp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert run(capsys, "install", "--root", str(root), "--prefix", "/opt/krnet")[0] == 0
    assert (root / "opt/krnet/bin/krnet").is_file()
    unit = unit_sections((root / "etc/systemd/system/krnet.service").read_text())
    assert unit["Service"]["ExecStart"].startswith("/opt/krnet/bin/krnet --config ")


def test_uninstall_undoes_exactly_what_install_did(
    zipapp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/other-tool").write_text("not krnet's")
    (root / "etc/krnet").mkdir(parents=True)
    (root / "etc/krnet/krnet.toml").write_text('mode = "host"\n')
    before = files_under(root)
    assert run(capsys, "install", "--root", str(root))[0] == 0
    assert files_under(root) > before
    code, out, _ = run(capsys, "uninstall", "--root", str(root))
    assert code == 0
    assert files_under(root) == before
    assert f"removed {root / 'usr/local/bin/krnet'}" in out
    assert "kept /etc/krnet and /var/lib/krnet" in out
    code, _, err = run(capsys, "uninstall", "--root", str(root))
    assert code == 2 and "nothing krnet install wrote is here" in err


def test_install_refuses_clearly_when_not_run_from_a_zipapp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", [str(tmp_path / "krnet" / "__main__.py")])
    code, _, err = run(capsys, "install", "--root", str(tmp_path / "root"))
    assert code == 2
    assert err.count("\n") == 1 and "not a zipapp" in err and "./build.sh" in err
    assert not (tmp_path / "root").exists()


def test_enable_with_a_scratch_root_is_refused(
    zipapp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "install", "--root", str(tmp_path / "root"), "--enable")
    assert code == 2 and "leave out --root" in err


# --- the unit -----------------------------------------------------------------------------------


def verify(unit_file: Path, root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of the unit; ExecStart must exist, so it is pointed into the
    scratch root (a copy of the unit, under the same name: verify checks the name too)."""
    text = unit_file.read_text()
    executable = unit_sections(text)["Service"]["ExecStart"].split()[0]
    copy = tmp_path / "verify" / unit_file.name
    copy.parent.mkdir()
    copy.write_text(text.replace(f"ExecStart={executable}", f"ExecStart={root}{executable}"))
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )


def require_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        if privileged_required():
            pytest.fail("systemd-analyze is not installed (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed")


def test_the_installed_unit_passes_systemd_analyze_verify(
    zipapp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_systemd_analyze()
    root = tmp_path / "root"
    assert run(capsys, "install", "--root", str(root))[0] == 0
    result = verify(root / "etc/systemd/system/krnet.service", root, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")  # a warning would be on stderr


def test_init_systemd_writes_the_same_hardened_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KRNET_CONFIG", "KRNET_DATA_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    code, out, _ = run(capsys, "init", "runner", "--host-address", "192.0.2.1", "--systemd")
    assert code == 0
    service = unit_sections(out)["Service"]
    assert service["ReadWritePaths"] == f"-{tmp_path}/.local/share/krnet"
    assert service["CapabilityBoundingSet"] == " ".join(CAPABILITIES)
    assert service["NoNewPrivileges"] == "yes"


def test_a_unit_for_files_in_a_home_directory_keeps_them_reachable(tmp_path: Path) -> None:
    require_systemd_analyze()
    home = Path("/home/alice")
    unit = render_unit(str(tmp_path / "krnet"), home / "krnet.toml", home / "data", "runner")
    service = unit_sections(unit)["Service"]
    assert service["ProtectHome"] == "read-only"  # its files live in a home directory
    assert service["ReadWritePaths"] == "-/home/alice/data"
    assert "StateDirectory" not in service
    (tmp_path / "krnet").write_text("#!/bin/sh\n")
    (tmp_path / "krnet").chmod(0o755)
    (tmp_path / "unit").mkdir()
    (tmp_path / "unit" / "krnet.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "unit" / "krnet.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_the_built_zipapp_installs_and_uninstalls_itself(tmp_path: Path) -> None:
    """What ships: dist/krnet.pyz, run as users run it, copies exactly itself."""
    zipapp = require_zipapp()
    root = tmp_path / "root"
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "s")}
    command = [sys.executable, "-S", str(zipapp)]
    installed = subprocess.run(
        [*command, "install", "--root", str(root)], env=environ, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    assert (root / "usr/local/bin/krnet").read_bytes() == zipapp.read_bytes()
    removed = subprocess.run(
        [*command, "uninstall", "--root", str(root)], env=environ, capture_output=True, text=True
    )
    assert removed.returncode == 0, removed.stderr
    assert files_under(root) == set()
