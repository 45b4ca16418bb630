"""`krnet install` and `krnet uninstall`: the zipapp and its systemd unit in the system's places.

install copies the zipapp it runs from to PREFIX/bin/krnet (PREFIX /usr/local) and writes
/etc/systemd/system/krnet.service (`krnet.commands.systemd`), for /etc/krnet/krnet.toml and
/var/lib/krnet. The unit's [X-Krnet-Install] section (ignored by systemd) lists what install
wrote and which directories it created, so uninstall removes exactly those. `--root DIR` puts
everything under a scratch root, for packaging and tests; systemctl is then never called.
"""

from __future__ import annotations

import argparse
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from krnet.commands.systemd import SYSTEM_CONFIG_DIR, SYSTEM_DATA_DIR, UNIT_NAME, render_unit
from krnet.config import CONFIG_FILE_NAME
from krnet.errors import KrnetError, UsageError

DEFAULT_PREFIX = Path("/usr/local")
UNIT_DIR = Path("/etc/systemd/system")
MANIFEST = "X-Krnet-Install"


def running_zipapp(argv0: str | None = None) -> Path:
    """The zipapp this krnet runs from, or a UsageError saying how to get one."""
    where = Path(argv0 if argv0 is not None else sys.argv[0]).absolute()
    if where.is_file() and zipfile.is_zipfile(where):
        return where
    raise UsageError(
        f"krnet install copies the zipapp it runs from, but this krnet runs from {where} "
        "(not a zipapp): build one with ./build.sh and run `python3 dist/krnet.pyz install`"
    )


def _under(root: Path, path: Path) -> Path:
    """`path` (absolute, as the installed system sees it) inside `root`."""
    return root / path.relative_to("/")


def _new_dirs(path: Path) -> list[Path]:
    """The parents of `path` that do not exist yet, outermost first."""
    missing = [parent for parent in path.parents if not parent.exists()]
    return sorted(missing, key=lambda p: len(p.parts))


def run_install(args: argparse.Namespace) -> int:
    """Copy the zipapp, write the unit; print (or, --enable, run) how to start it."""
    source = running_zipapp()
    root = Path(args.root).absolute() if args.root else Path("/")
    if args.enable and args.root:
        raise UsageError("--enable starts the service on this machine: leave out --root")
    binary = (Path(args.prefix).absolute() if args.prefix else DEFAULT_PREFIX) / "bin" / "krnet"
    unit_path = UNIT_DIR / UNIT_NAME
    if args.root:
        root.mkdir(parents=True, exist_ok=True)  # the scratch root itself is the caller's
    targets = [_under(root, binary), _under(root, unit_path)]
    created = sorted({d for target in targets for d in _new_dirs(target)}, key=str)
    try:
        for directory in created:
            directory.mkdir(mode=0o755)
        if source.resolve() != targets[0].resolve():
            shutil.copyfile(source, targets[0])
        targets[0].chmod(0o755)
        made = [Path("/") / directory.relative_to(root) for directory in created]
        manifest = _manifest([binary, unit_path], made)
        config = SYSTEM_CONFIG_DIR / CONFIG_FILE_NAME
        unit = render_unit(str(binary), config, SYSTEM_DATA_DIR, extra=manifest)
        targets[1].write_text(unit)
        targets[1].chmod(0o644)
    except PermissionError as exc:
        raise KrnetError(
            f"cannot write {exc.filename}: run krnet install as root (or with --root DIR)"
        ) from exc
    for target in targets:
        print(f"wrote {target}")
    start = ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]
    if args.enable:
        for argv in start:
            _systemctl(argv)
        print(f"started {UNIT_NAME}")
    else:
        print("next steps:")
        if not _under(root, config).exists():
            print(f"  write {config}: krnet init host ... or krnet init runner ... (as root)")
        print(f"  start it: {' '.join(start[0])} && {' '.join(start[1])}")
    return 0


def _manifest(files: list[Path], directories: list[Path]) -> str:
    """The unit's section that tells uninstall what to remove."""
    lines = [
        "",
        "# What `krnet install` wrote and created; `krnet uninstall` removes exactly these.",
        f"[{MANIFEST}]",
        f"Files={' '.join(map(str, files))}",
    ]
    if directories:
        lines.append(f"Directories={' '.join(map(str, directories))}")
    return "\n".join(lines) + "\n"


def run_uninstall(args: argparse.Namespace) -> int:
    """Stop and disable the service (not with --root), remove what install wrote."""
    root = Path(args.root).absolute() if args.root else Path("/")
    unit_file = _under(root, UNIT_DIR / UNIT_NAME)
    if not unit_file.exists():
        raise UsageError(f"{unit_file} does not exist: nothing krnet install wrote is here")
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit_file.read_text())
    if not parser.has_section(MANIFEST):
        raise UsageError(
            f"{unit_file} was not written by krnet install (no [{MANIFEST}] section): "
            "remove it by hand"
        )
    if not args.root:
        _systemctl(["systemctl", "disable", "--now", UNIT_NAME], check=False)
    files = parser.get(MANIFEST, "Files", fallback="").split()
    directories = parser.get(MANIFEST, "Directories", fallback="").split()
    for name in files:
        path = _under(root, Path(name))
        if path.exists():
            path.unlink()
            print(f"removed {path}")
    for name in sorted(directories, key=len, reverse=True):
        path = _under(root, Path(name))
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
            print(f"removed {path}/")
    if not args.root:
        _systemctl(["systemctl", "daemon-reload"], check=False)
    print(
        f"kept {SYSTEM_CONFIG_DIR} and {SYSTEM_DATA_DIR} (the configuration, the cluster's "
        "record and token): remove them by hand; `krnet cleanup` removes the network"
    )
    return 0


def _systemctl(argv: list[str], check: bool = True) -> None:
    """Run systemctl; a failure raises, or with check=False is reported and passed over."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise KrnetError("systemctl is not installed: this machine does not run systemd") from exc
    if result.returncode == 0:
        return
    said = f"`{' '.join(argv)}` failed: " + (
        " ".join(result.stderr.split()) or f"exit status {result.returncode}"
    )
    if check:
        raise KrnetError(said)
    print(f"{said} (going on)", file=sys.stderr)
