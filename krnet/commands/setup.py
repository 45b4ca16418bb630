"""Setup commands: `krnet init`, `krnet config show`, `krnet token`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from krnet.commands.systemd import UNIT_NAME, render_unit, systemd_quote
from krnet.config import (
    SYSTEM_DIRS,
    config_path,
    data_dir_path,
    default_layout,
    load_settings,
    settings_from,
)
from krnet.config.sources import flag_name
from krnet.core.model.settings import Settings, is_loopback_reachable_address
from krnet.core.protocol.token import (
    read_token,
    token_file,
    token_path,
    write_private,
    write_token,
)
from krnet.errors import ConfigError, UsageError

SHARED_KEYS = ("overlay_vxlan_id", "overlay_vxlan_port", "overlay_mtu")
_COMMENTS = {
    "host_reachable_address": "Runners build their VXLAN tunnels to this address: this host's LAN "
    "address.\n# 127.0.0.1 makes the host use the address each runner's join arrives on.",
    "host_address": "Where the host's `krnet serve` listens (TCP join_port, default 8470).",
    "join_token": "The cluster join token (`krnet token` on the host prints it).",
}


# --- krnet init ----------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    """Write krnet.toml (and on a host the join token, and optionally a systemd unit)."""
    _refuse_misplaced_flags(args)
    path, _ = config_path(args)
    data_dir = data_dir_path(args)
    unit_path = _unit_path(args.systemd)
    for target in (path, unit_path):
        if target is not None and target.exists() and not args.force:
            raise UsageError(f"{target} exists: pass --force to replace it, or edit it")
    values = _init_values(args)
    settings = settings_from(values, f"`krnet init {args.mode}`")  # refuse before writing
    write_private(path, render_config(values), 0o600 if "join_token" in values else 0o644)
    report = [f"wrote {path}"]
    if args.systemd is not None:
        unit = render_unit(_serve_executable(), path, data_dir, args.mode)
        if unit_path is None:
            print(unit, end="")
        else:
            write_private(unit_path, unit, 0o644)
            report.append(f"wrote {unit_path}")
    start = (
        f"systemctl daemon-reload && systemctl enable --now {UNIT_NAME}"
        if unit_path is not None
        else f"{_krnet_command(args)} serve"
    )
    if args.mode == "host":
        report += _host_next_steps(settings, data_dir, start)
    else:
        report += _runner_next_steps(settings, data_dir, start)
    print("\n".join(report), file=sys.stderr if args.systemd and unit_path is None else sys.stdout)
    return 0


def _refuse_misplaced_flags(args: argparse.Namespace) -> None:
    """Each init flag belongs to one mode; silently dropping it would surprise."""
    runner_only = ("host_address", "join_token", "join_token_file")
    wrong = runner_only if args.mode == "host" else ("host_reachable_address",)
    for key in wrong:
        if getattr(args, key, None) is not None:
            other = "runner" if args.mode == "host" else "host"
            raise UsageError(
                f"{flag_name(key)} is for `krnet init {other}`, not `init {args.mode}`"
            )
    if args.mode == "runner" and not args.host_address:
        raise UsageError(
            "krnet init runner needs --host-address ADDRESS: the host's address, where its "
            "`krnet serve` listens"
        )


def _init_values(args: argparse.Namespace) -> dict[str, object]:
    values: dict[str, object] = {"mode": args.mode, "overlay_enabled": True}
    if args.mode == "host":
        values["host_reachable_address"] = args.host_reachable_address or "127.0.0.1"
    else:
        values["host_address"] = args.host_address
        if args.join_token:
            values["join_token"] = args.join_token
        if args.join_token_file:
            values["join_token_file"] = str(Path(args.join_token_file).resolve())
    return values


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # JSON numbers and escaped strings are valid TOML


def render_config(values: dict[str, object]) -> str:
    """krnet.toml text for `values`, with the settings that must match listed as comments."""
    mode = values["mode"]
    lines = [
        f"# krnet {mode} configuration, written by `krnet init {mode}`.",
        "# Every key, its default and where it can come from: `krnet config show`, "
        "docs/configuration.md.",
        "",
    ]
    for key, value in values.items():
        if key in _COMMENTS:
            lines.append(f"# {_COMMENTS[key]}")
        lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "# These must be the same on the host and every runner (defaults shown):"]
    lines += [f"# {key} = {_toml_value(getattr(Settings(), key))}" for key in SHARED_KEYS]
    return "\n".join(lines) + "\n"


def _unit_path(option: str | None) -> Path | None:
    """Where --systemd writes the unit: None for stdout (no FILE given, or `-`)."""
    if option is None or option == "-":
        return None
    path = Path(option).expanduser().absolute()
    return path / UNIT_NAME if path.is_dir() else path


def _serve_executable() -> str:
    """The zipapp being run, else the installed `krnet` script."""
    if sys.argv[0].endswith(".pyz"):
        return str(Path(sys.argv[0]).absolute())
    return shutil.which("krnet") or "krnet"


def _krnet_command(args: argparse.Namespace) -> str:
    """`krnet` with the global options this run was given, for copy-paste next steps."""
    words = ["krnet"]
    for option in ("config", "data_dir"):
        if getattr(args, option, None):
            words += [flag_name(option), systemd_quote(getattr(args, option))]
    return " ".join(words)


def _host_next_steps(settings: Settings, data_dir: Path, start: str) -> list[str]:
    """Write the join token unless one exists; tell how to start and how to add runners."""
    path = token_path(data_dir)
    if path.exists():
        lines = [f"kept the existing join token in {path}"]
        token = read_token(settings, data_dir)
    else:
        token = write_token(path)
        lines = [f"wrote a new join token to {path} (mode 0600)"]
    address = settings.host_reachable_address
    if is_loopback_reachable_address(settings):
        lines.append(
            f"warning: host_reachable_address is {address}: runners cannot reach a loopback "
            "address; krnet will use the address each join arrives on, but set "
            "host_reachable_address to this host's LAN address (or rerun with "
            "--host-reachable-address ADDRESS --force)"
        )
        address = "HOST_ADDRESS"
    return [
        *lines,
        f"join token: {token}",
        "next steps:",
        f"  start the host: {start}",
        f"  on each runner: copy {path} to it (scp; mode 0600), then "
        f"krnet init runner --host-address {address} --join-token-file FILE",
        "    (or set KRNET_JOIN_TOKEN for krnet serve: a token on a command line shows in "
        "ps and shell history)",
        f"  open UDP {settings.overlay_vxlan_port} (VXLAN) and TCP {settings.join_port} (join) "
        "between the host and every runner",
    ]


def _runner_next_steps(settings: Settings, data_dir: Path, start: str) -> list[str]:
    lines = ["next steps:"]
    if settings.join_token is None:
        lines.append(
            "  give it the host's join token (`krnet token` on the host): join_token in the "
            f"config, KRNET_JOIN_TOKEN, or the file {token_path(data_dir)} (mode 0600)"
        )
    return [*lines, f"  start the runner agent: {start}"]


# --- krnet config show ---------------------------------------------------------------------


def _shown(key: str, value: object) -> object:
    """A value as `config show` prints it: the join token never in full."""
    if key == "join_token" and isinstance(value, str):
        return value[:4] + "…"
    return value


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_config_show(args: argparse.Namespace) -> int:
    """Print every effective setting and the source that set it."""
    from krnet.config.checks import warnings

    loaded = load_settings(args)
    values = {key: _shown(key, value) for key, value in asdict(loaded.settings).items()}
    notes = warnings(loaded.settings, loaded.sources)
    if args.json:
        document = {
            "config_file": str(loaded.config_file) if loaded.config_file else None,
            "data_dir": str(loaded.data_dir),
            "default_dirs": default_layout(),
            "settings": {
                key: {"value": value, "source": loaded.sources[key]}
                for key, value in values.items()
            },
            "warnings": notes,
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        config_file = loaded.config_file or f"none ({loaded.config_path} does not exist)"
        rows = [("KEY", "VALUE", "SOURCE")]
        rows += [(key, _cell(value), loaded.sources[key]) for key, value in values.items()]
        widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
        print(f"config file: {config_file}\ndata dir:    {loaded.data_dir}")
        print(f"defaults:    {_layout_line(default_layout())}\n")
        for key, value, source in rows:
            print(f"{key:<{widths[0]}}  {value:<{widths[1]}}  {source}")
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    settings = loaded.settings
    if (
        settings.mode == "host"
        and settings.overlay_enabled
        and is_loopback_reachable_address(settings)
    ):
        print(
            f"note: host_reachable_address is {settings.host_reachable_address} (from "
            f"{loaded.sources['host_reachable_address']}): runners cannot reach it; the host "
            "will use the address each join arrives on. Set it to this host's LAN address.",
            file=sys.stderr,
        )
    return 0


def _layout_line(layout: str) -> str:
    if layout == "system":
        dirs = ", ".join(str(path) for path in SYSTEM_DIRS.values())
        return f"system ({dirs}: run as root)"
    return "user (platformdirs' user config and data dirs)"


# --- krnet token ---------------------------------------------------------------------------


def run_token(args: argparse.Namespace) -> int:
    """Print the join token runners must present, or (--rotate) replace it."""
    loaded = load_settings(args)
    settings, data_dir = loaded.settings, loaded.data_dir
    if not args.rotate:
        print(read_token(settings, data_dir))
        return 0
    if settings.mode != "host":
        raise UsageError(
            "krnet token --rotate belongs on the host; then give the new token to this runner"
        )
    path = token_file(settings, data_dir)
    if path is None:
        raise ConfigError(
            f"join_token is set (from {loaded.sources['join_token']}) and wins over any token "
            "file: change it there instead (`python3 -c 'import secrets; "
            "print(secrets.token_hex(32))'` makes a new one)"
        )
    print(write_token(path))
    print(
        f"wrote a new join token to {path} (mode 0600). Every runner needs it: set join_token "
        "(or KRNET_JOIN_TOKEN) on each runner, then restart `krnet serve` on the host and on "
        "every runner.",
        file=sys.stderr,
    )
    return 0
