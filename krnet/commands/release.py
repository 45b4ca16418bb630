"""`krnet node release` and `krnet node prune`: free runner ids, tunnels and guard entries now.

Both act through the running host (the serve process owns the record and the kernel): on the
host itself over its join port on loopback, from elsewhere with `--connect` and the token.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from pydantic import JsonValue

from krnet.config import load_settings
from krnet.core.model.durations import parse_duration
from krnet.core.model.settings import LoadedSettings
from krnet.core.protocol.messages import ReleasedRunner
from krnet.errors import UsageError

ANY_ADDRESS = {"", "0.0.0.0", "::"}
RUNNER = re.compile(r"[!-~]{1,253}")  # what a hostname on the wire may be (an id is one too)


def run_release(args: argparse.Namespace) -> int:
    """`node release RUNNER [--force]`: one runner, by id or hostname."""
    if not RUNNER.fullmatch(args.runner):
        raise UsageError(
            f"RUNNER {args.runner!r} is neither a runner id nor a hostname: name one that "
            "`krnet node overlay` lists"
        )
    fields: dict[str, JsonValue] = {"runner": args.runner, "force": args.force}
    what = f"runner {args.runner}"
    return _run(args, fields, what, nothing=f"{what}: nothing released")


def run_prune(args: argparse.Namespace) -> int:
    """`node prune [--older-than DURATION]`: every inactive runner (silent that long)."""
    fields: dict[str, JsonValue] = {"prune": True}
    what = "every inactive runner"
    if args.older_than is not None:
        fields["older_than"] = parse_duration(args.older_than)
        what += f" silent for {args.older_than} or more"
    return _run(args, fields, what, nothing=f"no inactive runner to release ({what})")


def _run(args: argparse.Namespace, fields: dict[str, JsonValue], what: str, nothing: str) -> int:
    loaded = load_settings(args)
    address, here = _host_address(args, loaded)
    command = "release" if "runner" in fields else "prune"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{command} frees the ids, tunnels and guard entries of {what}: add --yes"
            )
        planned = _ask(loaded, address, here, {**fields, "dry_run": True})
        if not planned:
            print(nothing)
            return 0
        for runner in planned:
            print(f"  runner {_who(runner)}")
        answer = input(f"Release these {len(planned)} runner(s) on {address}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing released")
            return 0
    released = _ask(loaded, address, here, fields)
    if args.json:
        print(json.dumps({"released": [runner.model_dump() for runner in released]}, indent=2))
        return 0
    for runner in released:
        print(_done(runner))
    if not released:
        print(nothing)
    return 0


def _ask(
    loaded: LoadedSettings, address: str, here: bool, fields: dict[str, JsonValue]
) -> list[ReleasedRunner]:
    from krnet.core.protocol.client import release_on_host

    return release_on_host(address, loaded.settings, loaded.data_dir, fields, here=here)


def _host_address(args: argparse.Namespace, loaded: LoadedSettings) -> tuple[str, bool]:
    """Where the host listens: --connect, else this node's own join port (a host only)."""
    if args.connect:
        return args.connect, False
    settings = loaded.settings
    if settings.mode != "host":
        raise UsageError(
            f"this node runs in {settings.mode} mode: run `krnet node release|prune` on the "
            "host, or add --connect HOST[:PORT] with the cluster's token"
        )
    bind = settings.join_bind.strip("[]")
    host = "127.0.0.1" if bind in ANY_ADDRESS else bind
    return (f"[{host}]" if ":" in host else host) + f":{settings.join_port}", True


def _who(runner: ReleasedRunner) -> str:
    return (
        f"{runner.runner_id} ({runner.hostname}, {runner.physical_ip}, {runner.status}, "
        f"last seen {runner.last_seen})"
    )


def _done(runner: ReleasedRunner) -> str:
    line = f"released runner {_who(runner)}: id {runner.runner_id} is free"
    if runner.tunnel_error is None:
        return f"{line}; vxkr{runner.runner_id} and its guard entry removed"
    failed = f"removing vxkr{runner.runner_id} failed ({runner.tunnel_error})"
    return f"{line}; {failed}: the host's next reconcile removes it"
