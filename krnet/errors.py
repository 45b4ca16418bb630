"""Typed errors; `krnet.cli` is the one place that turns them into messages and exit codes."""

from __future__ import annotations

from typing import Literal, TypeAlias


class KrnetError(Exception):
    """An error a person can act on: the message names the thing at fault and the fix."""

    exit_code = 1


class ConfigError(KrnetError):
    """A setting, config file or command-line value that cannot work."""

    exit_code = 2


class UsageError(KrnetError):
    """A command used the wrong way."""

    exit_code = 2


class StoreError(KrnetError):
    """The SQLite record cannot be opened, migrated or written."""


class KernelError(KrnetError):
    """A link, address, route or sysctl could not be brought to the expected state."""


class FirewallError(KrnetError):
    """An iptables or firewalld rule could not be applied, read or removed."""


class DockerError(KrnetError):
    """The Docker daemon refused or cannot be reached."""


class PoolExhaustedError(KrnetError):
    """Every runner id is taken by an active runner."""


class AlreadyEnrolledError(KrnetError):
    """A join without a runner key names the hostname of an enrolled runner that is active."""


ErrorCode: TypeAlias = Literal[  # the wire `error` codes (docs/protocol.md, `error`)
    "bad_request",
    "frame_too_large",
    "unsupported_version",
    "auth_failed",
    "settings_mismatch",
    "pool_exhausted",
    "internal",
    "timeout",
    "busy",
    "unknown_runner",
    "runner_active",
    "already_enrolled",
]


class ProtocolError(KrnetError):
    """A join-protocol failure, carrying the wire error code (docs/protocol.md).

    `authenticated`: the peer's `error` carried a MAC that verified, so the host itself sent
    it (a runner gives up its allocation only on such a refusal).
    """

    def __init__(self, code: ErrorCode, message: str, *, authenticated: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.authenticated = authenticated
