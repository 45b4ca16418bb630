"""Loading settings: the one way a command gets them.

Sources, later wins: defaults -> ~/.kohakuriver/{host,runner}_config.py (read with `ast`,
never executed) -> krnet.toml -> KRNET_<NAME> environment -> command-line flags. Reading the
sources lives in `krnet.config.sources`, the checks in `krnet.config.checks`; both are
imported only when settings are loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from krnet.core.model.settings import LoadedSettings, Settings

if TYPE_CHECKING:
    import argparse

APP_NAME = "krnet"
CONFIG_FILE_NAME = "krnet.toml"
REFERENCE_DIR = ".kohakuriver"
SYSTEM_DIRS = {"config": Path("/etc/krnet"), "data": Path("/var/lib/krnet")}


def system_wide(environ: Mapping[str, str], uid: int, home: Path | None = None) -> bool:
    """Whether the defaults are the system's dirs (/etc/krnet, /var/lib/krnet): run as root,
    with HOME unset or root's own home. A HOME pointed elsewhere asks for a per-user layout
    there (as a test harness or `sudo -H -u` does); --config, --data-dir and KRNET_* win anyway.
    """
    if uid != 0:
        return False
    named = str(home) if home is not None else environ.get("HOME", "")
    return not named or Path(named) == _root_home()


def _root_home() -> Path:
    import pwd

    try:
        return Path(pwd.getpwuid(0).pw_dir)
    except KeyError:
        return Path("/root")


def default_layout(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """ "system" or "user": which default dirs apply to this process (or to `environ`/`uid`)."""
    env = os.environ if environ is None else environ
    return "system" if system_wide(env, os.geteuid() if uid is None else uid) else "user"


def _user_dir(
    kind: str, environ: Mapping[str, str] | None, home: Path | None, uid: int | None = None
) -> Path:
    """The default config/data dir: the system's as root, else platformdirs' user dir.

    Computed from `environ`/`home`/`uid` when they are given (the XDG rule platformdirs applies
    on Linux, applied to them), so tests and callers never read the real home or need root.
    """
    if system_wide(os.environ if environ is None else environ, _uid(uid), home):
        return SYSTEM_DIRS[kind]
    if environ is None and home is None:
        import platformdirs

        getter = platformdirs.user_config_dir if kind == "config" else platformdirs.user_data_dir
        return Path(getter(APP_NAME))
    environ = {} if environ is None else environ
    if home is None:
        home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    variable, fallback = (
        ("XDG_CONFIG_HOME", ".config") if kind == "config" else ("XDG_DATA_HOME", ".local/share")
    )
    base = environ.get(variable, "").strip()
    return (Path(base) if base else home / fallback) / APP_NAME


def _uid(uid: int | None) -> int:
    return os.geteuid() if uid is None else uid


def config_path(
    args: argparse.Namespace | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    uid: int | None = None,
) -> tuple[Path, str | None]:
    """Where krnet.toml is, and what named it ("--config", "KRNET_CONFIG", None = default)."""
    env = os.environ if environ is None else environ
    if args is not None and getattr(args, "config", None):
        return Path(args.config).expanduser().absolute(), "--config"
    if env.get("KRNET_CONFIG"):
        return Path(env["KRNET_CONFIG"]).expanduser().absolute(), "KRNET_CONFIG"
    return _user_dir("config", environ, home, uid) / CONFIG_FILE_NAME, None


def data_dir_path(
    args: argparse.Namespace | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    uid: int | None = None,
) -> Path:
    """Where the database and the join token live: --data-dir, KRNET_DATA_DIR, else the
    default (/var/lib/krnet as root, platformdirs' user data dir otherwise)."""
    env = os.environ if environ is None else environ
    if args is not None and getattr(args, "data_dir", None):
        return Path(args.data_dir).expanduser().absolute()
    if env.get("KRNET_DATA_DIR"):
        return Path(env["KRNET_DATA_DIR"]).expanduser().absolute()
    return _user_dir("data", environ, home, uid)


def reference_config_path(mode: str, home: Path | None = None) -> Path:
    """The reference's ~/.kohakuriver/host_config.py or runner_config.py."""
    return (Path.home() if home is None else home) / REFERENCE_DIR / f"{mode}_config.py"


def load_settings(
    args: argparse.Namespace | None = None,
    *,
    mode: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    home: Path | None = None,
) -> LoadedSettings:
    """Every source layered (later wins) and checked: the one way a command gets its settings."""
    from krnet.config.checks import validate
    from krnet.config.sources import env_layer, flag_layer, reference_layer, toml_layer

    path, named_by = config_path(args, environ=environ, home=home)
    toml = toml_layer(path, named_by)
    flags = flag_layer(
        {**_serve_flags(args), **(overrides or {}), **({"mode": mode} if mode else {})}
    )
    environment = env_layer(os.environ if environ is None else environ)
    chosen = next(
        (layer["mode"][0] for layer in (flags, environment, toml) if "mode" in layer),
        Settings().mode,
    )
    reference = reference_layer(reference_config_path(str(chosen), home))
    values: dict[str, object] = {}
    sources = dict.fromkeys(asdict(Settings()), "default")
    for layer in (reference, toml, environment, flags):
        for key, (value, source) in layer.items():
            values[key] = value
            sources[key] = source
    settings = _defaults_with(values)
    validate(settings, sources)
    return LoadedSettings(
        settings=settings,
        sources=sources,
        config_file=path if path.is_file() else None,
        data_dir=data_dir_path(args, environ=environ, home=home),
        config_path=path,
    )


def _serve_flags(args: argparse.Namespace | None) -> dict[str, object]:
    """`krnet serve --mode` is the one command-line flag that is itself a setting."""
    if args is not None and getattr(args, "command", None) == "serve":
        return {"mode": getattr(args, "mode", None)}
    return {}


def settings_from(values: Mapping[str, object], source: str) -> Settings:
    """Settings from defaults plus `values` (typed, e.g. what `krnet init` writes), checked."""
    from krnet.config.checks import validate
    from krnet.config.sources import typed_layer

    layer = typed_layer(values, source)
    settings = _defaults_with({key: value for key, (value, _) in layer.items()})
    validate(settings, dict.fromkeys(layer, source))
    return settings


def _defaults_with(values: Mapping[str, Any]) -> Settings:
    """The defaults with `values` in place; each was coerced to its field's type when read."""
    return replace(Settings(), **values)
