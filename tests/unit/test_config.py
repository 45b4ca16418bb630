"""Settings loading: sources and precedence, the reference's own files, and every refusal."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from krnet.cli import main
from krnet.config import load_settings, settings_from
from krnet.core.model.settings import (
    Settings,
    check_mtu_fits_underlay,
    is_loopback_reachable_address,
)
from krnet.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def reference(home: Path, mode: str, text: str) -> Path:
    path = home / ".kohakuriver" / f"{mode}_config.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def toml(home: Path, text: str) -> Path:
    path = home / ".config" / "krnet" / "krnet.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refusal(home: Path, environ: dict[str, str] | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ or {}, home=home, **kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == 2
    return str(caught.value)


# --- sources and precedence ----------------------------------------------------------------


def test_nothing_configured_gives_the_reference_defaults(home: Path) -> None:
    loaded = load_settings(environ={}, home=home)
    assert loaded.settings == Settings()
    assert set(loaded.sources.values()) == {"default"}
    assert set(loaded.sources) == {f.name for f in dataclasses.fields(Settings)}
    assert loaded.config_file is None
    assert loaded.config_path == home / ".config" / "krnet" / "krnet.toml"
    assert loaded.data_dir == home / ".local" / "share" / "krnet"


def test_default_dirs_follow_xdg_variables(home: Path, tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")}
    loaded = load_settings(environ=environ, home=home)
    assert loaded.config_path == tmp_path / "c" / "krnet" / "krnet.toml"
    assert loaded.data_dir == tmp_path / "d" / "krnet"


def test_without_environ_or_home_the_dirs_are_platformdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platformdirs

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "KRNET_CONFIG", "KRNET_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_settings()
    assert loaded.config_path == Path(platformdirs.user_config_dir("krnet")) / "krnet.toml"
    assert loaded.data_dir == Path(platformdirs.user_data_dir("krnet"))
    assert loaded.config_path == tmp_path / ".config" / "krnet" / "krnet.toml"


def test_later_sources_win_and_each_value_names_its_source(home: Path) -> None:
    py = reference(
        home,
        "host",
        "OVERLAY_MTU: int = 1400\nOVERLAY_VXLAN_ID = 200\nOVERLAY_VXLAN_PORT = 4790\n"
        "JOIN_PORT = 9000\n",
    )
    config = toml(home, "overlay_mtu = 1300\noverlay_vxlan_id = 300\noverlay_vxlan_port = 4791\n")
    environ = {"KRNET_OVERLAY_MTU": "1200", "KRNET_OVERLAY_VXLAN_ID": "400"}
    loaded = load_settings(environ=environ, home=home, overrides={"overlay_mtu": 1100})
    settings, sources = loaded.settings, loaded.sources
    assert (settings.overlay_mtu, sources["overlay_mtu"]) == (1100, "flag --overlay-mtu")
    assert (settings.overlay_vxlan_id, sources["overlay_vxlan_id"]) == (
        400,
        "env KRNET_OVERLAY_VXLAN_ID",
    )
    assert (settings.overlay_vxlan_port, sources["overlay_vxlan_port"]) == (4791, str(config))
    assert (settings.join_port, sources["join_port"]) == (9000, str(py))
    assert (settings.overlay_host_ip, sources["overlay_host_ip"]) == ("10.0.0.1", "default")
    assert loaded.config_file == config


def test_overrides_that_are_none_mean_the_flag_was_not_given(home: Path) -> None:
    loaded = load_settings(environ={}, home=home, overrides={"overlay_mtu": None})
    assert loaded.sources["overlay_mtu"] == "default"


@pytest.mark.parametrize(
    ("how", "expected_source"),
    [
        ({"mode": "runner"}, "flag --mode"),
        ({"overrides": {"mode": "runner"}}, "flag --mode"),
        ({"environ": {"KRNET_MODE": "runner"}}, "env KRNET_MODE"),
        ({"toml": 'mode = "runner"\n'}, "toml"),
        (
            {
                "args": argparse.Namespace(
                    command="serve", mode="runner", config=None, data_dir=None
                )
            },
            "flag --mode",
        ),
    ],
)
def test_the_mode_chooses_which_reference_file_is_read(
    home: Path, how: dict[str, object], expected_source: str
) -> None:
    reference(home, "host", "OVERLAY_MTU = 1400\n")
    runner_file = reference(home, "runner", "OVERLAY_MTU = 1300\nHOST_ADDRESS = '192.0.2.1'\n")
    kwargs = dict(how)
    config = toml(home, str(kwargs.pop("toml"))) if "toml" in kwargs else None
    environ = kwargs.pop("environ", {})
    loaded = load_settings(environ=environ, home=home, **kwargs)  # type: ignore[arg-type]
    assert loaded.settings.mode == "runner"
    assert loaded.sources["mode"] == (str(config) if config else expected_source)
    assert (loaded.settings.overlay_mtu, loaded.sources["overlay_mtu"]) == (1300, str(runner_file))


def test_host_mode_reads_host_config_by_default(home: Path) -> None:
    path = reference(home, "host", "OVERLAY_MTU = 1400\n")
    reference(home, "runner", "OVERLAY_MTU = 1300\n")
    loaded = load_settings(environ={}, home=home)
    assert (loaded.settings.overlay_mtu, loaded.sources["overlay_mtu"]) == (1400, str(path))


def test_config_file_named_by_flag_wins_over_krnet_config(home: Path, tmp_path: Path) -> None:
    flagged = tmp_path / "flag.toml"
    flagged.write_text("overlay_mtu = 1400\n")
    from_env = tmp_path / "env.toml"
    from_env.write_text("overlay_mtu = 1300\n")
    args = argparse.Namespace(config=str(flagged), data_dir=None)
    loaded = load_settings(args, environ={"KRNET_CONFIG": str(from_env)}, home=home)
    assert (loaded.settings.overlay_mtu, loaded.config_file) == (1400, flagged)
    loaded = load_settings(environ={"KRNET_CONFIG": str(from_env)}, home=home)
    assert (loaded.settings.overlay_mtu, loaded.config_file) == (1300, from_env)


def test_a_missing_config_file_is_an_error_only_when_named(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    args = argparse.Namespace(config=str(missing), data_dir=None)
    message = refusal(home, args=args)
    assert str(missing) in message and "--config" in message and "krnet init" in message
    message = refusal(home, environ={"KRNET_CONFIG": str(missing)})
    assert str(missing) in message and "KRNET_CONFIG" in message


def test_data_dir_from_flag_then_environment_then_default(home: Path, tmp_path: Path) -> None:
    args = argparse.Namespace(config=None, data_dir=str(tmp_path / "flag"))
    environ = {"KRNET_DATA_DIR": str(tmp_path / "env")}
    assert load_settings(args, environ=environ, home=home).data_dir == tmp_path / "flag"
    assert load_settings(environ=environ, home=home).data_dir == tmp_path / "env"
    assert load_settings(environ={}, home=home).data_dir == home / ".local/share/krnet"


# --- the reference's own examples ----------------------------------------------------------


def test_reference_host_config_example_loads_unchanged(home: Path) -> None:
    path = reference(home, "host", (FIXTURES / "host_config.py").read_text())
    loaded = load_settings(environ={}, home=home)
    assert loaded.settings == dataclasses.replace(
        Settings(), host_reachable_address="192.168.88.53", overlay_enabled=True
    )
    from_file = {key for key, source in loaded.sources.items() if source == str(path)}
    assert from_file == {
        "host_reachable_address",
        "overlay_enabled",
        "overlay_bridge_name",
        "overlay_host_ip",
        "overlay_host_prefix",
        "overlay_vxlan_id",
        "overlay_vxlan_port",
        "overlay_mtu",
    }


def test_reference_runner_config_example_loads_unchanged(home: Path) -> None:
    path = reference(home, "runner", (FIXTURES / "runner_config.py").read_text())
    environ = {"KRNET_MODE": "runner", "KRNET_HOST_ADDRESS": "192.0.2.1"}
    loaded = load_settings(environ=environ, home=home)
    assert loaded.settings == dataclasses.replace(
        Settings(), mode="runner", overlay_enabled=True, host_address="192.0.2.1"
    )
    from_file = {key for key, source in loaded.sources.items() if source == str(path)}
    assert from_file == {
        "docker_network_name",
        "docker_network_subnet",
        "docker_network_gateway",
        "overlay_enabled",
        "overlay_network_name",
        "overlay_vxlan_id",
        "overlay_vxlan_port",
        "overlay_mtu",
    }


def test_reference_runner_example_alone_asks_for_host_address(home: Path) -> None:
    reference(home, "runner", (FIXTURES / "runner_config.py").read_text())
    message = refusal(home, mode="runner")
    assert message.startswith("host_address is not set")
    assert "KRNET_HOST_ADDRESS" in message and "runner_config.py" in message


def test_reference_custom_scheme_and_jumbo_examples_load(home: Path) -> None:
    reference(
        home,
        "host",
        'OVERLAY_HOST_IP: str = "172.16.0.1"\nOVERLAY_HOST_PREFIX: int = 12  # Covers '
        "172.16.0.0/12\nOVERLAY_MTU: int = 8950\n",
    )
    settings = load_settings(environ={}, home=home).settings
    assert (settings.overlay_host_ip, settings.overlay_host_prefix) == ("172.16.0.1", 12)
    assert str(settings.plan().runner(1).subnet) == "172.17.0.0/16"
    assert settings.overlay_mtu == 8950


# --- the reference files are read, never run -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("import os\n", 1, "an import"),
        ("OVERLAY_MTU = 1450\nfrom os import path\n", 2, "an import"),
        ('print("hello")\n', 1, "a call"),
        ('OVERLAY_MTU = 1400\n\nOVERLAY_MTU = int("1450")\n', 3, "not a literal"),
        ("OVERLAY_MTU = 1400 + 50\n", 1, "not a literal"),
        ("OVERLAY_HOST_IP = f'10.0.0.{1}'\n", 1, "not a literal"),
        ("def helper():\n    return 1\n", 1, "a definition"),
        ("if True:\n    OVERLAY_MTU = 1400\n", 1, "a statement"),
        ("OVERLAY_MTU += 1\n", 1, "an assignment krnet cannot read"),
        ("OVERLAY_MTU: int\n", 1, "an assignment krnet cannot read"),
    ],
)
def test_anything_but_literal_assignments_is_refused_with_file_and_line(
    home: Path, text: str, line: int, words: str
) -> None:
    path = reference(home, "host", text)
    message = refusal(home)
    assert message.startswith(f"{path}:{line}: ")
    assert words in message and "never runs" in message


def test_a_refused_file_is_never_executed(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    reference(home, "host", f"OVERLAY_MTU = open({str(marker)!r}, 'w').close()\n")
    refusal(home)
    reference(home, "host", f"open({str(marker)!r}, 'w').close()\n")
    refusal(home)
    assert not marker.exists()


def test_a_syntax_error_names_file_and_line(home: Path) -> None:
    path = reference(home, "host", "OVERLAY_MTU = 1450\nOVERLAY_MTU = = 3\n")
    assert refusal(home).startswith(f"{path}:2: not valid Python")


def test_docstrings_chained_names_and_kohakuriver_settings_are_read_or_skipped(home: Path) -> None:
    reference(
        home,
        "host",
        '"""KohakuRiver host config."""\nHOST_PORT: int = 8000\nSHARED_DIR = "/mnt/share"\n'
        "OVERLAY_VXLAN_PORT = JOIN_PORT_UNUSED = 4790\n",
    )
    settings = load_settings(environ={}, home=home).settings
    assert settings.overlay_vxlan_port == 4790
    assert settings.join_port == 8470


def test_mode_cannot_be_set_in_a_reference_file(home: Path) -> None:
    path = reference(home, "host", 'MODE = "runner"\n')
    message = refusal(home)
    assert message.startswith(f"{path}:1: MODE cannot be set here") and "KRNET_MODE" in message


# --- unknown keys and types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "text", "expected"),
    [
        ("toml", "overlay_mtuu = 1450\n", "did you mean overlay_mtu?"),
        ("toml", "host_reachable_adress = '192.0.2.1'\n", "did you mean host_reachable_address?"),
        ("toml", "[overlay]\nmtu = 1450\n", "no [sections]"),
        ("host", "OVERLAY_MTUU: int = 1450\n", "did you mean OVERLAY_MTU?"),
        ("host", "overlay_mtu = 1450\n", "did you mean OVERLAY_MTU?"),
    ],
)
def test_unknown_keys_are_refused_with_a_suggestion(
    home: Path, where: str, text: str, expected: str
) -> None:
    path = toml(home, text) if where == "toml" else reference(home, where, text)
    message = refusal(home)
    assert "is not a krnet setting" in message and expected in message and str(path) in message


def test_an_unknown_flag_key_is_refused(home: Path) -> None:
    assert "did you mean overlay_mtu?" in refusal(home, overrides={"overlay_mt": 1400})


def test_a_near_miss_environment_variable_is_warned_about(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        load_settings(environ={"KRNET_OVERLAY_MTUU": "1400", "KRNET_OTHER": "x"}, home=home)
    assert "KRNET_OVERLAY_MTUU" in caplog.text and "KRNET_OVERLAY_MTU?" in caplog.text
    assert "KRNET_OTHER" not in caplog.text


@pytest.mark.parametrize(
    ("toml_text", "environ", "key", "expected"),
    [
        ('overlay_mtu = "abc"\n', {}, "overlay_mtu", "is not a whole number"),
        ("overlay_mtu = 1450.5\n", {}, "overlay_mtu", "is not a whole number"),
        ("overlay_mtu = true\n", {}, "overlay_mtu", "is not a whole number"),
        ("overlay_enabled = 3\n", {}, "overlay_enabled", "is not true or false"),
        ('overlay_enabled = "yes"\n', {}, "overlay_enabled", "is not true or false"),
        ("host_address = 5\n", {}, "host_address", "is not a string"),
        ("runner_timeout = true\n", {}, "runner_timeout", "is not a number"),
        ('mode = "hub"\n', {}, "mode", "is not host or runner"),
        ("", {"KRNET_OVERLAY_MTU": "abc"}, "overlay_mtu", "is not a whole number"),
        ("", {"KRNET_OVERLAY_MTU": "1450.0"}, "overlay_mtu", "is not a whole number"),
        ("", {"KRNET_OVERLAY_ENABLED": "maybe"}, "overlay_enabled", "is not true or false"),
        ("", {"KRNET_RUNNER_TIMEOUT": "nan"}, "runner_timeout", "is not a number"),
        ("", {"KRNET_MODE": "hub"}, "mode", "is not host or runner"),
    ],
)
def test_wrong_types_name_key_value_source_and_fix(
    home: Path, toml_text: str, environ: dict[str, str], key: str, expected: str
) -> None:
    path = toml(home, toml_text)
    message = refusal(home, environ=environ)
    source = f"env {next(iter(environ))}" if environ else str(path)
    assert message.startswith(f"{key} = ")
    assert f"(from {source})" in message and expected in message and f"set {key} to" in message


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "on", " On "])
def test_environment_true_words(home: Path, word: str) -> None:
    environ = {"KRNET_OVERLAY_ENABLED": word}
    assert load_settings(environ=environ, home=home).settings.overlay_enabled is True


@pytest.mark.parametrize("word", ["0", "false", "False", "no", "off"])
def test_environment_false_words(home: Path, word: str) -> None:
    environ = {"KRNET_VXLAN_PORT_GUARD": word}
    assert load_settings(environ=environ, home=home).settings.vxlan_port_guard is False


def test_environment_numbers_and_empty_optional_values(home: Path) -> None:
    environ = {
        "KRNET_OVERLAY_MTU": " 1400 ",
        "KRNET_RUNNER_TIMEOUT": "45",
        "KRNET_HEARTBEAT_INTERVAL": "2.5",
        "KRNET_HOST_ADDRESS": "",
    }
    settings = load_settings(environ=environ, home=home).settings
    assert (settings.overlay_mtu, settings.runner_timeout, settings.heartbeat_interval) == (
        1400,
        45.0,
        2.5,
    )
    assert settings.host_address is None


def test_whole_numbers_are_accepted_for_float_settings(home: Path) -> None:
    toml(home, "heartbeat_interval = 2\nrunner_timeout = 20\n")
    settings = load_settings(environ={}, home=home).settings
    assert (settings.heartbeat_interval, settings.runner_timeout) == (2.0, 20.0)
    assert isinstance(settings.heartbeat_interval, float)


def test_flags_given_as_text_are_parsed(home: Path) -> None:
    loaded = load_settings(environ={}, home=home, overrides={"overlay_mtu": "1400"})
    assert loaded.settings.overlay_mtu == 1400


# --- settings that cannot work -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ("overlay_mtu = 500\n", "overlay_mtu", "1450 for 1500-byte links"),
        ("overlay_mtu = 70000\n", "overlay_mtu", "8950 for 9000-byte jumbo frames"),
        ("overlay_vxlan_port = 0\n", "overlay_vxlan_port", "use a UDP port"),
        ("overlay_vxlan_port = 65536\n", "overlay_vxlan_port", "use a UDP port"),
        ("join_port = 70000\n", "join_port", "use a TCP port"),
        ("overlay_vxlan_id = 16777000\n", "overlay_vxlan_id", "lower overlay_vxlan_id"),
        ("overlay_vxlan_id = -1\n", "overlay_vxlan_id", "lower overlay_vxlan_id"),
        ("overlay_host_prefix = 16\n", "overlay_runner_prefix", "must be longer than"),
        ("overlay_runner_prefix = 28\n", "overlay_runner_prefix", "at most /24"),
        ('overlay_host_ip = "10.1.0.1"\n', "overlay_host_ip", "block 0"),
        ('overlay_host_ip = "10.0.0.300"\n', "overlay_host_ip", "such as 10.0.0.1"),
        ('host_reachable_address = "my-host"\n', "host_reachable_address", "LAN address"),
        ('host_reachable_address = "0.0.0.0"\n', "host_reachable_address", "LAN address"),
        ('join_bind = "::"\n', "join_bind", "0.0.0.0"),
        ('runner_address = "224.0.0.1"\n', "runner_address", "runner's LAN address"),
        ('host_address = "192.168.1.300"\n', "host_address", "IPv4 address or DNS name"),
        ('docker_network_gateway = "172.31.0.1"\n', "docker_network_gateway", "172.30.0.1"),
        ('docker_network_gateway = "172.30.0.0"\n', "docker_network_gateway", "172.30.0.1"),
        ('docker_network_subnet = "172.30.0.1/16"\n', "docker_network_subnet", "172.30.0.0/16"),
        ('overlay_network_name = "kohakuriver-net"\n', "overlay_network_name", "different"),
        ('overlay_bridge_name = "a-very-long-bridge"\n', "overlay_bridge_name", "kohaku-overlay"),
        ('overlay_bridge_name = "vxkr3"\n', "overlay_bridge_name", "kohaku-overlay"),
        ("heartbeat_interval = 30\n", "heartbeat_interval", "below runner_timeout"),
        ("runner_timeout = 0\n", "runner_timeout", "above zero"),
        ("max_connections = 0\n", "max_connections", "above zero"),
        ('join_token = " "\n', "join_token", "remove it"),
        ('mode = "runner"\noverlay_enabled = true\n', "host_address", "KRNET_HOST_ADDRESS"),
    ],
)
def test_settings_that_cannot_work_are_refused(home: Path, text: str, key: str, fix: str) -> None:
    path = toml(home, text)
    message = refusal(home)
    assert key in message and str(path) in message and fix in message


@pytest.mark.parametrize(
    "text",
    ["overlay_mtu = 500\n", "overlay_mtuu = 1\n", 'mode = "hub"\n', "join_port = 0\n"],
)
def test_the_command_line_prints_one_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = tmp_path / "krnet.toml"
    config.write_text(text)
    assert main(["--config", str(config), "config", "show"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("krnet: ") and captured.err.count("\n") == 1
    assert str(config) in captured.err and "Traceback" not in captured.err


def test_valid_edge_values_load(home: Path) -> None:
    toml(
        home,
        "overlay_mtu = 576\noverlay_vxlan_port = 1\njoin_port = 65535\n"
        "overlay_vxlan_id = 16776960\nhost_address = 'krnet-host.example'\n"
        "heartbeat_interval = 29.9\n",
    )
    settings = load_settings(environ={}, home=home).settings
    assert settings.overlay_vxlan_id + settings.plan().max_runners == 2**24 - 1
    assert settings.host_address == "krnet-host.example"


def test_a_loopback_reachable_address_is_allowed_and_reported(home: Path) -> None:
    toml(home, "overlay_enabled = true\n")
    settings = load_settings(environ={}, home=home).settings
    assert is_loopback_reachable_address(settings)
    assert not is_loopback_reachable_address(
        dataclasses.replace(settings, host_reachable_address="192.0.2.10")
    )


def test_overlay_mtu_must_leave_room_for_vxlan_on_the_underlay() -> None:
    check_mtu_fits_underlay(Settings(), 1500)
    check_mtu_fits_underlay(dataclasses.replace(Settings(), overlay_mtu=8950), 9000)
    with pytest.raises(ConfigError) as caught:
        check_mtu_fits_underlay(Settings(), 1400, link="eth0")
    message = str(caught.value)
    assert "overlay_mtu = 1450" in message and "eth0" in message and "at most 1350" in message


def test_settings_from_checks_what_init_would_write() -> None:
    assert settings_from({"mode": "runner", "host_address": "192.0.2.1"}, "x").mode == "runner"
    with pytest.raises(ConfigError, match="did you mean host_address"):
        settings_from({"host_adress": "192.0.2.1"}, "x")
    with pytest.raises(ConfigError, match=r"host_reachable_address = 'nope' \(from x\)"):
        settings_from({"host_reachable_address": "nope"}, "x")


def test_importing_config_stays_cheap() -> None:
    code = (
        "import sys, krnet.config; "
        "print(sorted(m for m in ('tomllib', 'tomli', 'platformdirs', 'difflib', "
        "'krnet.config.sources', 'krnet.config.checks') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- overlay_mode ---------------------------------------------------------------------------


def test_overlay_mode_is_hub_unless_the_host_says_direct(home: Path) -> None:
    assert load_settings(environ={}, home=home).settings.overlay_mode == "hub"
    toml(home, 'overlay_mode = "direct"\n')
    assert load_settings(environ={}, home=home).settings.overlay_mode == "direct"


@pytest.mark.parametrize("value", ['"mesh"', '"Direct"', "1"])
def test_any_other_overlay_mode_names_the_key_and_the_allowed_values(
    home: Path, value: str
) -> None:
    path = toml(home, f"overlay_mode = {value}\n")
    message = refusal(home)
    assert message.startswith("overlay_mode = ") and str(path) in message
    assert "set overlay_mode to hub or direct" in message


def test_direct_mode_refuses_a_plan_of_more_runners_than_a_peer_table_holds(home: Path) -> None:
    """A direct host pushes every runner to every runner, at most 255 a table: a /20 plan
    (4,095 runners) would fail at the 256th join, so it is refused before anything starts."""
    path = toml(home, 'overlay_mode = "direct"\noverlay_runner_prefix = 20\n')
    message = refusal(home)
    assert message.startswith("overlay_mode = 'direct'") and str(path) in message
    assert "4095 runners" in message and "at most 255" in message
    assert "overlay_runner_prefix = 16" in message and "hub" in message
    toml(home, 'overlay_mode = "hub"\noverlay_runner_prefix = 20\n')
    assert load_settings(environ={}, home=home).settings.plan().max_runners == 4095


def test_overlay_mode_on_a_runner_only_warns_that_the_host_decides(home: Path) -> None:
    from krnet.config.checks import warnings

    toml(home, 'mode = "runner"\nhost_address = "192.0.2.1"\noverlay_mode = "direct"\n')
    loaded = load_settings(environ={}, home=home)
    notes = [note for note in warnings(loaded.settings, loaded.sources) if "overlay_mode" in note]
    assert len(notes) == 1 and "the host decides" in notes[0]
    toml(home, 'overlay_mode = "direct"\n')
    host = load_settings(environ={}, home=home)
    assert not [note for note in warnings(host.settings, host.sources) if "overlay_mode" in note]
