"""The cluster join token: generated on the host, kept in a 0600 file, read by both sides.

Where the token comes from, first found wins: `join_token` (also KRNET_JOIN_TOKEN), the file
named by `join_token_file`, else `<data dir>/join_token` (written by `krnet init host`).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from krnet.errors import ConfigError

if TYPE_CHECKING:
    from krnet.core.model.settings import Settings

TOKEN_FILE_NAME = "join_token"
TOKEN_BYTES = 32  # 256 bits, the key of HMAC-SHA256

log = logging.getLogger(__name__)


def generate_token() -> str:
    """A fresh 256-bit token, as 64 hex digits."""
    return secrets.token_hex(TOKEN_BYTES)


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE_NAME


def token_file(settings: Settings, data_dir: Path) -> Path | None:
    """The file the token is read from, or None when `join_token` gives it directly."""
    if settings.join_token is not None:
        return None
    if settings.join_token_file is not None:
        return Path(settings.join_token_file).expanduser()
    return token_path(data_dir)


def read_token(settings: Settings, data_dir: Path) -> str:
    """The token this node presents; a ConfigError saying how to get one when there is none."""
    path = token_file(settings, data_dir)
    if path is None:
        return str(settings.join_token).strip()
    try:
        token = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        setting = "join_token_file" if settings.join_token_file is not None else "the data dir"
        raise ConfigError(
            f"no join token: {path} (from {setting}) does not exist: on the host run "
            "`krnet init host`; on a runner set join_token (or KRNET_JOIN_TOKEN) to the output "
            "of `krnet token` on the host"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the join token file {path}: {exc}") from None
    if not token:
        raise ConfigError(
            f"the join token file {path} is empty: write the host's token into it "
            "(`krnet token` on the host prints it)"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "join token file %s is open to group or others (mode %o): run chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    return token


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `path` atomically (temp file, fsync, rename) with exactly `mode`, never wider.

    The temporary file comes from mkstemp in the same directory: a fresh name opened with
    O_EXCL, so no symlink planted at a predictable name is ever followed.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), mode)  # the umask may have narrowed it
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def private_directory(directory: Path) -> None:
    """The directory holding the token: created 0700, and tightened (with a warning) when it
    exists wider, whatever made it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    found = stat.S_IMODE(directory.stat().st_mode)
    if found & 0o077:
        os.chmod(directory, found & 0o700)
        log.warning(
            "data dir %s was open to group or others (mode %o): made it 0700", directory, found
        )


def write_token(path: Path, token: str | None = None) -> str:
    """Store `token` (a fresh one by default) in `path`, mode 0600; return it."""
    token = generate_token() if token is None else token
    try:
        private_directory(path.parent)
        write_private(path, token + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the join token file {path}: {exc.strerror}") from None
    return token


def rotate_token(data_dir: Path) -> str:
    """Replace the data dir's token with a fresh one; every runner then needs the new one."""
    return write_token(token_path(data_dir))
