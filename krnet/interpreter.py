"""Which interpreters the file serves, and the one line for any other (used by `krnet.boot`).

dist/krnet.pyz carries pydantic-core (compiled) once per target, CPython 3.10 to 3.14 on x86_64
and aarch64 with glibc; each interpreter loads the copy named after its own ABI. Anywhere else
krnet says in one line what it found, what it needs and what to do, and exits 2: never a
traceback. This module uses only the standard library and must parse and run on Python 3.7
(shiv's own start-up code runs there; Python 3.6 cannot parse it), so nothing newer in here:
no walrus, no `match`, no f-string `=`, annotations only as strings.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import re
import sys

from krnet import __version__

# The ABI tag of an extension module, cpython-313-aarch64-linux-gnu, with its flags (3.7's "m",
# the "t" of a free-threaded 3.13t).
ABI_TAG = re.compile(r"cpython-3(\d+)([a-z]*)-([a-z0-9_]+)-linux-([a-z]+)")
OLDEST_GLIBC = (2, 17)
GLIBC_NEEDED = "glibc 2.17 or newer"
EXIT_UNSUPPORTED = 2


def carried_targets() -> set[tuple[int, str]]:
    """The (minor version, architecture) pairs whose pydantic-core this installation carries."""
    try:
        spec = importlib.util.find_spec("pydantic_core")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return set()
    targets = set()
    for directory in spec.submodule_search_locations:
        for name in os.listdir(directory):
            match = ABI_TAG.search(name) if name.startswith("_pydantic_core.") else None
            if match and not match.group(2) and match.group(4) == "gnu":
                targets.add((int(match.group(1)), match.group(3)))
    return targets


def glibc_version() -> tuple[int, int] | None:
    """This machine's glibc as (major, minor), or None (musl, or not Linux)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        text = ""
    match = re.match(r"glibc (\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def own_abi() -> re.Match[str] | None:
    """This interpreter's ABI tag match (version, free-threading, architecture, libc), or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        match = ABI_TAG.search(suffix)
        if match:
            return match
    return None


def describe_interpreter() -> str:
    """What is running: `CPython 3.11.7 on Linux x86_64, glibc 2.36`."""
    implementation = sys.implementation.name
    name = {"cpython": "CPython", "pypy": "PyPy"}.get(implementation, implementation)
    version = ".".join(str(part) for part in sys.version_info[:3])
    abi = own_abi()
    if abi and "t" in abi.group(2):
        version += " (free-threaded)"
    machine = os.uname().machine if hasattr(os, "uname") else sys.platform
    system = "Linux" if sys.platform.startswith("linux") else sys.platform
    glibc = glibc_version()
    if glibc:
        libc = f"glibc {glibc[0]}.{glibc[1]}"
    elif abi and abi.group(4) != "gnu":
        libc = f"{abi.group(4)} libc"
    else:
        libc = "no glibc"
    return f"{name} {version}, {system} {machine}, {libc}"


def describe_targets(targets: set[tuple[int, str]]) -> str:
    """`CPython 3.10 3.11 on x86_64, aarch64`, grouping architectures that carry the same set."""
    by_arch: dict[str, list[str]] = {}
    for minor, arch in sorted(targets):
        by_arch.setdefault(arch, []).append(f"3.{minor}")
    groups: dict[str, list[str]] = {}
    for arch in sorted(by_arch, key=lambda arch: (arch != "x86_64", arch)):
        groups.setdefault(" ".join(by_arch[arch]), []).append(arch)
    return "; ".join(
        f"CPython {versions} on {', '.join(arches)}" for versions, arches in groups.items()
    )


def version_line() -> str:
    """`krnet --version`: the release, this interpreter and platform, and the targets carried."""
    targets = carried_targets()
    carried = describe_targets(targets) if targets else "the dependencies installed beside it"
    return f"krnet {__version__} on {describe_interpreter()}; carries {carried} ({GLIBC_NEEDED})"


class PrintVersion(argparse.Action):
    """`--version` as one line, unwrapped (argparse's own action wraps it to the terminal)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_line())
        parser.exit()


def advice(
    targets: set[tuple[int, str]], abi: re.Match[str] | None, glibc: tuple[int, int] | None
) -> str:
    """What to do on this machine, given what the file carries and what was found."""
    arches = sorted({arch for _, arch in targets}) or ["x86_64", "aarch64"]
    minors = sorted({minor for minor, _ in targets}) or [10, 11, 12, 13, 14]
    suggested = f"python3.{11 if 11 in minors else minors[-1]}"
    if abi is None or abi.group(4) != "gnu" or glibc is None:
        return "run it on a Linux with glibc (Debian, Ubuntu, RHEL 7 or newer), not musl (Alpine)"
    if abi.group(3) not in arches:
        return f"run it on an {' or '.join(arches)} machine"
    if glibc < OLDEST_GLIBC:
        return "run it on a newer distribution"
    if "t" in abi.group(2):
        return f"run it with the regular (not free-threaded) python3.{abi.group(1)}"
    return f"install {suggested} and run `{suggested} {program_name()}`"


def program_name() -> str:
    """How the user started krnet, for the advice: `krnet.pyz` or the name they gave it."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "-m", "__main__.py") else "krnet.pyz"


def unsupported() -> str | None:
    """One line saying why this interpreter cannot run krnet, or None when it can."""
    targets = carried_targets()
    abi = own_abi()
    glibc = glibc_version()
    supported = (
        sys.version_info >= (3, 10)
        and sys.implementation.name == "cpython"
        and (glibc is None or glibc >= OLDEST_GLIBC)
    )
    if targets:
        supported = (
            supported
            and abi is not None
            and not abi.group(2)
            and abi.group(4) == "gnu"
            and (int(abi.group(1)), abi.group(3)) in targets
        )
    if supported:
        return None
    needs = describe_targets(targets) if targets else "CPython 3.10 or newer"
    return (
        f"krnet: found {describe_interpreter()}; {program_name()} needs {needs} "
        f"({GLIBC_NEEDED}): {advice(targets, abi, glibc)}"
    )
