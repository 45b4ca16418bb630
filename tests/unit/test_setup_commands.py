"""`krnet init`, `krnet config show`, `krnet token` and the join token file, run through the CLI."""

from __future__ import annotations

import configparser
import json
import logging
import os
import stat
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from krnet.cli import main
from krnet.config import load_settings
from krnet.core.model.settings import Settings
from krnet.core.protocol.token import (
    generate_token,
    read_token,
    rotate_token,
    write_token,
)
from krnet.errors import ConfigError


@dataclass(frozen=True)
class Node:
    """One machine's isolated home: where krnet's default config and data dir land."""

    home: Path
    config: Path
    data_dir: Path

    @property
    def token_file(self) -> Path:
        return self.data_dir / "join_token"


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("KRNET_", "XDG_")):
            monkeypatch.delenv(name)
    return Node(home, home / ".config/krnet/krnet.toml", home / ".local/share/krnet")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- krnet init ----------------------------------------------------------------------------


def test_init_host_writes_config_and_a_private_token(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    assert code == 0
    assert tomllib.loads(node.config.read_text()) == {
        "mode": "host",
        "overlay_enabled": True,
        "host_reachable_address": "192.0.2.10",
    }
    token = node.token_file.read_text().strip()
    assert len(token) == 64 and int(token, 16) >= 0
    assert mode_of(node.token_file) == 0o600
    assert f"join token: {token}" in out
    assert "krnet init runner --host-address 192.0.2.10 --join-token-file FILE" in out
    assert "KRNET_JOIN_TOKEN" in out and f"--join-token {token}" not in out
    assert str(node.config) in out and "krnet serve" in out
    settings = load_settings().settings
    assert (settings.mode, settings.overlay_enabled) == ("host", True)


def test_init_host_without_an_address_warns_about_loopback(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init", "host")
    assert code == 0
    assert tomllib.loads(node.config.read_text())["host_reachable_address"] == "127.0.0.1"
    assert "warning: host_reachable_address is 127.0.0.1" in out
    assert "--host-address HOST_ADDRESS --join-token-file FILE" in out


def test_init_refuses_to_overwrite_without_force_and_keeps_the_token(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")[0] == 0
    before, token = node.config.read_text(), node.token_file.read_text()
    code, out, err = run(capsys, "init", "host", "--host-reachable-address", "192.0.2.20")
    assert (code, out) == (2, "")
    assert err.startswith(f"krnet: {node.config} exists") and "--force" in err
    assert node.config.read_text() == before
    code, out, _ = run(capsys, "init", "host", "--host-reachable-address", "192.0.2.20", "--force")
    assert code == 0 and "kept the existing join token" in out
    assert tomllib.loads(node.config.read_text())["host_reachable_address"] == "192.0.2.20"
    assert node.token_file.read_text() == token


def test_init_runner_writes_host_address_and_token(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "init", "runner", "--host-address", "192.0.2.10", "--join-token", "s3cret-token"
    )
    assert code == 0
    assert tomllib.loads(node.config.read_text()) == {
        "mode": "runner",
        "overlay_enabled": True,
        "host_address": "192.0.2.10",
        "join_token": "s3cret-token",
    }
    assert mode_of(node.config) == 0o600  # it holds the token
    assert not node.token_file.exists()
    loaded = load_settings()
    assert read_token(loaded.settings, loaded.data_dir) == "s3cret-token"
    assert "start the runner agent: krnet serve" in out


def test_init_runner_without_token_says_where_to_put_it(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init", "runner", "--host-address", "krnet-host.example")
    assert code == 0
    assert mode_of(node.config) == 0o644
    assert "KRNET_JOIN_TOKEN" in out and str(node.token_file) in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["init", "runner"], "needs --host-address"),
        (
            ["init", "host", "--host-address", "192.0.2.1"],
            "--host-address is for `krnet init runner`",
        ),
        (["init", "host", "--join-token", "x"], "--join-token is for `krnet init runner`"),
        (
            [
                "init",
                "runner",
                "--host-address",
                "192.0.2.1",
                "--host-reachable-address",
                "192.0.2.2",
            ],
            "--host-reachable-address is for `krnet init host`",
        ),
        (
            ["init", "host", "--host-reachable-address", "192.0.2.300"],
            "host_reachable_address = '192.0.2.300' (from `krnet init host`) is not an IPv4",
        ),
        (["init", "runner", "--host-address", "10.0.0.300"], "host_address = '10.0.0.300'"),
    ],
)
def test_init_refuses_bad_input_before_writing_anything(
    node: Node, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("krnet: ") and expected in err
    assert not node.config.exists() and not node.data_dir.exists()


def test_init_writes_to_the_config_and_data_dir_given(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data = tmp_path / "etc/krnet.toml", tmp_path / "var"
    code, out, _ = run(
        capsys, "--config", str(config), "--data-dir", str(data), "init", "host",
        "--host-reachable-address", "192.0.2.10",
    )  # fmt: skip
    assert code == 0 and config.is_file() and (data / "join_token").is_file()
    assert not node.config.exists()
    assert f"krnet --config {config} --data-dir {data} serve" in out


# --- the systemd unit ----------------------------------------------------------------------


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_systemd_unit_file_runs_the_zipapp_with_the_files_init_wrote(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/krnet.pyz"])
    unit_dir = tmp_path / "systemd"
    unit_dir.mkdir()
    code, out, _ = run(
        capsys, "init", "host", "--host-reachable-address", "192.0.2.10", "--systemd", str(unit_dir)
    )
    assert code == 0
    unit_file = unit_dir / "krnet.service"
    unit = unit_sections(unit_file.read_text())
    assert unit["Service"]["ExecStart"] == (
        f"/usr/local/bin/krnet.pyz --config {node.config} --data-dir {node.data_dir} serve"
    )
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Unit"]["After"] == "network-online.target docker.service"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert f"wrote {unit_file}" in out and "systemctl enable --now krnet.service" in out
    code, _, err = run(capsys, "init", "host", "--systemd", str(unit_file))
    assert code == 2 and "--force" in err


def test_systemd_unit_without_file_goes_to_stdout_and_the_report_to_stderr(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/bin/krnet"])
    monkeypatch.setattr("shutil.which", lambda name: None)
    code, out, err = run(capsys, "init", "runner", "--host-address", "192.0.2.10", "--systemd")
    assert code == 0
    unit = unit_sections(out)
    assert unit["Service"]["ExecStart"].startswith("krnet --config ")
    assert unit["Service"]["ExecStart"].endswith(" serve")
    assert "(runner)" in unit["Unit"]["Description"]
    assert f"wrote {node.config}" in err


def test_systemd_unit_quotes_paths_with_spaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node: Node
) -> None:
    config = tmp_path / "my configs" / "krnet.toml"
    code, out, _ = run(
        capsys, "--config", str(config), "init", "runner", "--host-address", "192.0.2.1",
        "--systemd", "-",
    )  # fmt: skip
    assert code == 0
    assert f'--config "{config}"' in out


# --- krnet config show ---------------------------------------------------------------------


def test_config_show_table_lists_every_value_and_source(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    monkeypatch.setenv("KRNET_OVERLAY_MTU", "1400")
    monkeypatch.setenv("KRNET_JOIN_TOKEN", "abcdefghijklmnop")
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    assert f"config file: {node.config}" in out and f"data dir:    {node.data_dir}" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:] if line.strip()}
    assert set(rows) == {"KEY"} | {f.name for f in fields(Settings)}
    assert rows["overlay_mtu"][1:] == ["1400", "env", "KRNET_OVERLAY_MTU"]
    assert rows["host_reachable_address"][1:] == ["192.0.2.10", str(node.config)]
    assert rows["overlay_enabled"][1] == "true"
    assert rows["overlay_vxlan_id"][1:] == ["100", "default"]
    assert rows["host_address"][1:] == ["-", "default"]
    assert rows["join_token"][1] == "abcd…"
    assert "abcdefghijklmnop" not in out
    value_column = {line.index(rows[key][1]) for key in ("mode", "overlay_mtu", "join_port")
                    for line in out.splitlines() if line.startswith(key + " ")}  # fmt: skip
    assert len(value_column) == 1  # aligned


def test_config_show_json(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRNET_JOIN_TOKEN", "abcdefghijklmnop")
    monkeypatch.setenv("KRNET_HEARTBEAT_INTERVAL", "2")
    code, out, _ = run(capsys, "config", "show", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["config_file"] is None
    assert document["data_dir"] == str(node.data_dir)
    settings = document["settings"]
    assert set(settings) == {f.name for f in fields(Settings)}
    assert settings["overlay_mtu"] == {"value": 1450, "source": "default"}
    assert settings["heartbeat_interval"] == {
        "value": 2.0,
        "source": "env KRNET_HEARTBEAT_INTERVAL",
    }
    assert settings["host_address"] == {"value": None, "source": "default"}
    assert settings["join_token"] == {"value": "abcd…", "source": "env KRNET_JOIN_TOKEN"}
    assert "abcdefghijklmnop" not in out


def test_config_show_notes_a_loopback_reachable_address(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "init", "host")
    code, out, err = run(capsys, "config", "show", "--json")
    assert (
        code == 0 and json.loads(out)["settings"]["host_reachable_address"]["value"] == "127.0.0.1"
    )
    assert "note: host_reachable_address is 127.0.0.1" in err


# --- krnet token ---------------------------------------------------------------------------


def test_token_prints_the_data_dir_token_then_the_configured_one(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    assert run(capsys, "token")[1] == node.token_file.read_text()
    monkeypatch.setenv("KRNET_JOIN_TOKEN", "from-the-environment")
    assert run(capsys, "token")[1] == "from-the-environment\n"


def test_token_without_any_token_says_how_to_get_one(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "token")
    assert (code, out) == (2, "")
    assert "krnet init host" in err and "join_token" in err and str(node.token_file) in err


def test_token_rotate_replaces_the_file_and_reminds_about_runners(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    old = node.token_file.read_text().strip()
    code, out, err = run(capsys, "token", "--rotate")
    new = node.token_file.read_text().strip()
    assert code == 0 and out == f"{new}\n" and new != old and len(new) == 64
    assert mode_of(node.token_file) == 0o600
    assert "every runner" in err.lower()


def test_token_rotate_refuses_when_join_token_is_configured(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "init", "host", "--host-reachable-address", "192.0.2.10")
    before = node.token_file.read_text()
    monkeypatch.setenv("KRNET_JOIN_TOKEN", "pinned")
    code, out, err = run(capsys, "token", "--rotate")
    assert (code, out) == (2, "")
    assert "join_token is set (from env KRNET_JOIN_TOKEN)" in err and "change it there" in err
    assert node.token_file.read_text() == before


def test_token_rotate_writes_the_configured_token_file(
    node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "secrets" / "token"
    write_token(token_file, "first")
    monkeypatch.setenv("KRNET_JOIN_TOKEN_FILE", str(token_file))
    assert run(capsys, "token")[1] == "first\n"
    code, out, _ = run(capsys, "token", "--rotate")
    assert code == 0 and token_file.read_text() == out and out != "first\n"
    assert not node.token_file.exists()


def test_token_rotate_belongs_on_the_host(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init", "runner", "--host-address", "192.0.2.1")
    code, _, err = run(capsys, "token", "--rotate")
    assert code == 2 and "on the host" in err


# --- the token file ------------------------------------------------------------------------


def test_generated_tokens_are_256_bit_and_distinct() -> None:
    tokens = {generate_token() for _ in range(16)}
    assert len(tokens) == 16
    assert all(len(token) == 64 and int(token, 16) >= 0 for token in tokens)


def test_write_token_is_exactly_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "data" / "join_token"
    previous = os.umask(0o277)  # narrower than 0600: the file must still be 0600
    try:
        token = write_token(path)
    finally:
        os.umask(previous)
    assert mode_of(path) == 0o600
    assert path.read_text() == token + "\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["join_token"]  # no temp file left


def test_rotate_token_replaces_the_data_dir_token(tmp_path: Path) -> None:
    first = write_token(tmp_path / "join_token")
    second = rotate_token(tmp_path)
    assert second != first
    assert read_token(Settings(), tmp_path) == second


def test_read_token_prefers_join_token_then_the_file(tmp_path: Path) -> None:
    write_token(tmp_path / "join_token", "in-data-dir")
    other = tmp_path / "other"
    write_token(other, "in-other-file")
    assert read_token(Settings(), tmp_path) == "in-data-dir"
    assert read_token(Settings(join_token_file=str(other)), tmp_path) == "in-other-file"
    assert (
        read_token(Settings(join_token="direct", join_token_file=str(other)), tmp_path) == "direct"
    )


def test_read_token_warns_about_an_open_token_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "join_token"
    write_token(path, "token")
    with caplog.at_level(logging.WARNING):
        read_token(Settings(), tmp_path)
    assert caplog.text == ""
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert read_token(Settings(), tmp_path) == "token"
    assert "open to group or others" in caplog.text and f"chmod 600 {path}" in caplog.text


def test_read_token_refuses_an_empty_or_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write_token(empty, "")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(Settings(join_token_file=str(empty)), tmp_path)
    with pytest.raises(ConfigError, match="from join_token_file"):
        read_token(Settings(join_token_file=str(tmp_path / "missing")), tmp_path)
