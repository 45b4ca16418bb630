"""Settings: every option of the reference with its exact default, plus krnet's own keys.

Sources, later wins: defaults -> ~/.kohakuriver/{host,runner}_config.py (read with `ast`,
never executed) -> krnet.toml -> KRNET_<NAME> environment -> command-line flags. Reading the
sources lives in `krnet.config_sources`, the checks in `krnet.config_checks`; both are
imported only when settings are loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from krnet.core.plan import VXLAN_OVERHEAD, OverlayPlan
from krnet.errors import ConfigError

if TYPE_CHECKING:
    import argparse

Mode = Literal["host", "runner"]

APP_NAME = "krnet"
CONFIG_FILE_NAME = "krnet.toml"
REFERENCE_DIR = ".kohakuriver"


@dataclass(frozen=True)
class Settings:
    """Effective settings of one node. Field names are the reference's, in lower case."""

    mode: Mode = "host"
    # Host (reference: "Overlay Network Settings")
    host_reachable_address: str = "127.0.0.1"
    overlay_enabled: bool = False
    overlay_bridge_name: str = "kohaku-overlay"
    overlay_host_ip: str = "10.0.0.1"
    overlay_host_prefix: int = 8
    overlay_vxlan_id: int = 100
    overlay_vxlan_port: int = 4789
    overlay_mtu: int = 1450
    # Runner (reference: "Default Network Settings" and "Overlay Network Settings")
    docker_network_name: str = "kohakuriver-net"
    docker_network_subnet: str = "172.30.0.0/16"
    docker_network_gateway: str = "172.30.0.1"
    overlay_network_name: str = "kohakuriver-overlay"
    # krnet's own (DESIGN.md "Configuration")
    host_address: str | None = None
    join_port: int = 8470
    join_bind: str = "0.0.0.0"
    runner_address: str | None = None
    join_token: str | None = None
    join_token_file: str | None = None
    heartbeat_interval: float = 5.0
    runner_timeout: float = 30.0
    overlay_runner_prefix: int = 16
    vxlan_port_guard: bool = True
    reconcile_interval: float = 30.0
    probe_interval: float = 5.0
    tui_refresh_interval: float = 2.0
    max_connections: int = 1024
    handshake_timeout: float = 10.0

    def plan(self) -> OverlayPlan:
        """The address plan these settings describe (validated at load time)."""
        return OverlayPlan.build(
            self.overlay_host_ip,
            self.overlay_host_prefix,
            self.overlay_runner_prefix,
            self.overlay_vxlan_id,
        )


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus, for each field, the source that set it ("default", a file path, ...)."""

    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    data_dir: Path = Path(".")
    config_path: Path | None = None  # where krnet.toml is looked for, whether or not it exists


def _user_dir(kind: str, environ: Mapping[str, str] | None, home: Path | None) -> Path:
    """platformdirs' user config/data dir; computed from `environ`/`home` when they are given.

    Given either, the XDG rule platformdirs applies on Linux is applied to them instead of to
    the process's own, so tests and callers never read the real home.
    """
    if environ is None and home is None:
        import platformdirs

        getter = platformdirs.user_config_dir if kind == "config" else platformdirs.user_data_dir
        return Path(getter(APP_NAME))
    environ = {} if environ is None else environ
    home = Path.home() if home is None else home
    variable, fallback = (
        ("XDG_CONFIG_HOME", ".config") if kind == "config" else ("XDG_DATA_HOME", ".local/share")
    )
    base = environ.get(variable, "").strip()
    return (Path(base) if base else home / fallback) / APP_NAME


def config_path(
    args: argparse.Namespace | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[Path, str | None]:
    """Where krnet.toml is, and what named it ("--config", "KRNET_CONFIG", None = default)."""
    env = os.environ if environ is None else environ
    if args is not None and getattr(args, "config", None):
        return Path(args.config).expanduser().absolute(), "--config"
    if env.get("KRNET_CONFIG"):
        return Path(env["KRNET_CONFIG"]).expanduser().absolute(), "KRNET_CONFIG"
    return _user_dir("config", environ, home) / CONFIG_FILE_NAME, None


def data_dir_path(
    args: argparse.Namespace | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Path:
    """Where the database and the join token live: --data-dir, KRNET_DATA_DIR, else platformdirs."""
    env = os.environ if environ is None else environ
    if args is not None and getattr(args, "data_dir", None):
        return Path(args.data_dir).expanduser().absolute()
    if env.get("KRNET_DATA_DIR"):
        return Path(env["KRNET_DATA_DIR"]).expanduser().absolute()
    return _user_dir("data", environ, home)


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
    from krnet.config_checks import validate
    from krnet.config_sources import env_layer, flag_layer, reference_layer, toml_layer

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
    settings = replace(Settings(), **values)
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
    from krnet.config_checks import validate
    from krnet.config_sources import typed_layer

    layer = typed_layer(values, source)
    settings = replace(Settings(), **{key: value for key, (value, _) in layer.items()})
    validate(settings, dict.fromkeys(layer, source))
    return settings


def is_loopback_reachable_address(settings: Settings) -> bool:
    """True for the reference's default 127.0.0.1: the host then uses each join's local address."""
    return IPv4Address(settings.host_reachable_address).is_loopback


def check_mtu_fits_underlay(
    settings: Settings, underlay_mtu: int, *, link: str | None = None
) -> None:
    """Refuse an overlay MTU the underlay link cannot carry once VXLAN adds its 50 bytes."""
    if settings.overlay_mtu > underlay_mtu - VXLAN_OVERHEAD:
        where = f"link {link}" if link else "the underlay link"
        raise ConfigError(
            f"overlay_mtu = {settings.overlay_mtu} does not fit {where} (MTU {underlay_mtu}) plus "
            f"{VXLAN_OVERHEAD} bytes of VXLAN overhead: set overlay_mtu to at most "
            f"{underlay_mtu - VXLAN_OVERHEAD} on the host and every runner"
        )
