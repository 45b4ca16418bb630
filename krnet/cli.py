"""Command line: parse arguments, run one command, turn KrnetError into one line and a code.

Every command lives in `krnet.commands.<module>` and is imported only when it runs, so
`krnet --help` stays fast (no textual, docker, pyroute2 or sqlalchemy at start-up).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from krnet import interpreter
from krnet.errors import KrnetError

# command path -> "module:function" in krnet.commands
COMMANDS: dict[tuple[str, ...], str] = {
    ("init",): "setup:run_init",
    ("serve",): "serve:run",
    ("tui",): "tui:run",
    ("node", "overlay"): "status:run_node_overlay",
    ("node", "release"): "release:run_release",
    ("node", "prune"): "release:run_prune",
    ("doctor",): "doctor:run",
    ("config", "show"): "setup:run_config_show",
    ("token",): "setup:run_token",
    ("cleanup",): "cleanup:run",
    ("install",): "install:run_install",
    ("uninstall",): "install:run_uninstall",
    ("demo",): "demo:run",
    ("db", "upgrade"): "db:run_upgrade",
    ("db", "current"): "db:run_current",
    ("db", "backup"): "db:run_backup",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="krnet",
        description="VXLAN overlay networking for a Host + Runners container cluster.",
    )
    parser.add_argument(
        "--version",
        action=interpreter.PrintVersion,
        help="show the release, this interpreter and the targets",
    )
    parser.add_argument("--config", metavar="FILE", help="krnet.toml to read (else KRNET_CONFIG)")
    parser.add_argument("--data-dir", metavar="DIR", help="where the database and token live")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", help="write a config file (and a join token on a host)")
    init.add_argument("mode", choices=["host", "runner"])
    init.add_argument("--host-reachable-address", help="host: this host's LAN address")
    init.add_argument("--host-address", help="runner: the host's address")
    init.add_argument("--join-token", help="runner: the cluster join token")
    init.add_argument(
        "--join-token-file",
        metavar="FILE",
        help="runner: a file holding the join token (mode 0600; kept out of ps and history)",
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing config file")
    init.add_argument(
        "--systemd",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also write a systemd unit for `krnet serve` (to stdout without FILE)",
    )

    serve = commands.add_parser("serve", help="run the host service or runner agent headless")
    serve.add_argument("--mode", choices=["host", "runner"])

    tui = commands.add_parser("tui", help="live terminal UI of this node or a remote host")
    tui.add_argument("--connect", metavar="HOST[:PORT]", help="a remote host's join port")

    node = commands.add_parser("node", help="node status; releasing runners (on the host)")
    node_commands = node.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    overlay = node_commands.add_parser("overlay", help="overlay allocations and status")
    overlay.add_argument("--json", action="store_true", help="one JSON object (docs/design.md)")
    overlay.add_argument("--connect", metavar="HOST[:PORT]", help="ask a remote host instead")
    release = node_commands.add_parser(
        "release", help="free one runner's id, tunnel and guard entry now (on the running host)"
    )
    release.add_argument("runner", metavar="RUNNER", help="a runner id or hostname")
    release.add_argument("--force", action="store_true", help="even when the runner is active")
    prune = node_commands.add_parser("prune", help="release every inactive runner now")
    prune.add_argument(
        "--older-than", metavar="DURATION", help="only those silent this long (30m, 12h, 7d)"
    )
    for releasing in (release, prune):
        releasing.add_argument("--yes", action="store_true", help="do it without asking")
        releasing.add_argument(
            "--json", action="store_true", help='print {"released": [...]} (docs/design.md)'
        )
        releasing.add_argument(
            "--connect", metavar="HOST[:PORT]", help="a remote host (with the cluster's token)"
        )

    doctor = commands.add_parser("doctor", help="check this node; exit 1 on any failure")
    doctor.add_argument("--json", action="store_true", help="a JSON list of checks")
    doctor.add_argument("--probe", action="store_true", help="also send DF probes through tunnels")

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    show = config_commands.add_parser("show", help="effective settings and their sources")
    show.add_argument("--json", action="store_true")

    token = commands.add_parser("token", help="print (or rotate) the host's join token")
    token.add_argument("--rotate", action="store_true", help="write a new token; runners need it")

    cleanup = commands.add_parser("cleanup", help="remove every link, rule and network krnet made")
    cleanup.add_argument("--yes", action="store_true", help="do it without asking")

    install = commands.add_parser("install", help="copy this zipapp and a systemd unit into place")
    install.add_argument("--prefix", metavar="DIR", help="install DIR/bin/krnet (/usr/local)")
    install.add_argument("--root", metavar="DIR", help="install under DIR (a scratch root)")
    install.add_argument("--enable", action="store_true", help="systemctl enable --now krnet")
    uninstall = commands.add_parser("uninstall", help="remove what `krnet install` wrote")
    uninstall.add_argument("--root", metavar="DIR", help="the root `install --root` used")

    demo = commands.add_parser("demo", help="a whole cluster in network namespaces on this machine")
    demo.add_argument("--headless", action="store_true", help="print a report, no TUI")
    demo.add_argument("--no-docker", action="store_true", help="skip dockerd and containers")
    demo.add_argument("--keep", action="store_true", help="leave the lab up (krnet demo --down)")
    demo.add_argument("--down", action="store_true", help="tear down a lab left by --keep")

    db = commands.add_parser("db", help="the SQLite record")
    db_commands = db.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    db_commands.add_parser("upgrade", help="apply pending migrations")
    db_commands.add_parser("current", help="print the schema revision")
    backup = db_commands.add_parser("backup", help="copy the database consistently to FILE")
    backup.add_argument("file")
    return parser


def _command_key(args: argparse.Namespace) -> tuple[str, ...]:
    sub = getattr(args, "subcommand", None)
    return (args.command, sub) if sub else (args.command,)


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    module_name, function_name = COMMANDS[_command_key(args)].split(":")
    try:
        module = importlib.import_module(f"krnet.commands.{module_name}")
        return int(getattr(module, function_name)(args) or 0)
    except KrnetError as exc:
        print(f"krnet: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
