"""The systemd unit for `krnet serve`: one writer, used by `krnet install` and `init --systemd`.

The hardening is what a network daemon can take. krnet needs exactly CAPABILITIES (found by
running `serve` under `capsh` in a lab namespace with each one dropped in turn, and proven by
tests/lab/test_capabilities_lab.py; docs/operations.md lists what fails without each). It
writes /proc/sys (ip_forward, send_redirects), so the kernel tunables stay writable; /etc and
/usr are read-only, home directories hidden unless krnet's own files live there.
"""

from __future__ import annotations

from pathlib import Path

UNIT_NAME = "krnet.service"
# CAP_NET_ADMIN: links, addresses, routes, iptables, sysctls under net/; CAP_NET_RAW: the
# hub's ICMP probe sockets (and iptables' raw socket options).
CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW")
SYSTEM_CONFIG_DIR = Path("/etc/krnet")
SYSTEM_DATA_DIR = Path("/var/lib/krnet")
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=full",
    "PrivateTmp=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
)


def systemd_quote(word: str) -> str:
    """One word of an ExecStart= line, quoted the way systemd unquotes it."""
    if word and not any(ch.isspace() or ch in "\"'\\;$%" for ch in word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def _in_home(path: Path) -> bool:
    return any(path.is_relative_to(home) for home in HOME_DIRS)


def _directories(config: Path, data_dir: Path) -> list[str]:
    """Where krnet's files are: systemd's own directories when they are the system's."""
    lines = []
    if config.parent == SYSTEM_CONFIG_DIR:
        lines.append(f"ConfigurationDirectory={SYSTEM_CONFIG_DIR.name}")
    if data_dir == SYSTEM_DATA_DIR:
        lines += [f"StateDirectory={SYSTEM_DATA_DIR.name}", "StateDirectoryMode=0700"]
    else:
        lines.append(f"ReadWritePaths=-{systemd_quote(str(data_dir))}")
    home = _in_home(config) or _in_home(data_dir)
    return [*lines, f"ProtectHome={'read-only' if home else 'yes'}"]


def render_unit(
    executable: str, config: Path, data_dir: Path, mode: str | None = None, extra: str = ""
) -> str:
    """A hardened unit running `krnet serve` with `config` and `data_dir`; `extra` appended."""
    command = [executable, "--config", str(config), "--data-dir", str(data_dir), "serve"]
    capabilities = " ".join(CAPABILITIES)
    service = [
        *_directories(config, data_dir),
        f"CapabilityBoundingSet={capabilities}",
        f"AmbientCapabilities={capabilities}",
        *HARDENING,
    ]
    description = f"krnet VXLAN overlay ({mode})" if mode else "krnet VXLAN overlay"
    return f"""[Unit]
Description={description}
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=simple
ExecStart={" ".join(map(systemd_quote, command))}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
# Stopping leaves the tunnels up, so running containers keep their network.
TimeoutStopSec=30
# Hardening: docs/operations.md says what each line allows and why.
{chr(10).join(service)}

[Install]
WantedBy=multi-user.target
{extra}"""
