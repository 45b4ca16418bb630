"""The dependencies inside dist/krnet.pyz: one site-packages for every CPython and architecture.

CPython names each extension module after its ABI (`_pydantic_core.cpython-313-aarch64-linux-gnu
.so`), so the wheels of one version of a compiled package, one per target, unpack side by side
into one site-packages and each interpreter loads its own copy. This script keeps the wheels
pinned by version and hash in zipapp.lock and stages that site-packages for build.sh:

    python scripts/zipapp_wheels.py lock                 resolve again, rewrite zipapp.lock
    python scripts/zipapp_wheels.py stage SITE KRNET.whl  fetch the locked wheels, unpack them

KRNET_TARGETS (for example "3.11-x86_64") stages a subset of TARGETS: a smaller file that runs
only there. Wheels are fetched by name from the package index with `pip download` and cached in
.cache/wheels; pip checks every file against the lock's hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "zipapp.lock"
WHEEL_CACHE = ROOT / ".cache" / "wheels"
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
ARCHES = ("x86_64", "aarch64")
TARGETS = tuple(f"{python}-{arch}" for python in PYTHONS for arch in ARCHES)
# glibc 2.17 and newer: pip also accepts the older manylinux tags below this one.
MANYLINUX = "manylinux_2_17"
# Compiled speed-ups with a pure-Python fallback: carried as the pure wheel, in one copy
# (docs/performance.md has what it costs).
PURE = {"sqlalchemy", "charset-normalizer", "tomli"}
# Declared but never imported by krnet: SQLAlchemy needs greenlet only for its asyncio extension.
DROPPED = {"greenlet"}


def canonical(name: str) -> str:
    """A project name as the index compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(*args: str) -> None:
    """Run this interpreter's pip, quietly; a failure stops the build with pip's own message."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # pip's configuration here may name local indexes that do not exist; that is no news.
        errors = [
            line for line in result.stderr.splitlines(True) if "WARNING: Location" not in line
        ]
        sys.stderr.write("".join(errors))
        raise SystemExit(f"zipapp_wheels: failed: {' '.join(command)}")


def abi(target: str) -> str:
    """The wheel ABI tag of a `PYTHON-ARCH` target: cp313."""
    return "cp" + target.split("-")[0].replace(".", "")


def target_args(target: str) -> list[str]:
    """pip's options that select binary wheels for one `PYTHON-ARCH` target."""
    python, arch = target.split("-")
    platforms = ["--platform", f"{MANYLINUX}_{arch}", "--platform", f"manylinux2014_{arch}"]
    selection = ["--python-version", python, "--implementation", "cp", "--abi", abi(target)]
    return ["--only-binary=:all:", *selection, *platforms]


PURE_ARGS = ["--only-binary=:all:", "--platform", "any", "--implementation", "py", "--abi", "none"]


def report(requirements: list[str], selection: list[str], *, deps: bool) -> list[dict]:
    """What pip would install for these requirements (name, version, file, sha256), no download."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "report.json"
        no_deps = [] if deps else ["--no-deps"]
        pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(out),
            "--target", str(Path(scratch) / "t"), *no_deps, *selection, *requirements)  # fmt: skip
        return [
            {
                "name": canonical(item["metadata"]["name"]),
                "version": item["metadata"]["version"],
                "file": item["download_info"]["url"].rsplit("/", 1)[1],
                "sha256": item["download_info"]["archive_info"]["hashes"]["sha256"],
            }
            for item in json.loads(out.read_text())["install"]
        ]


def project_requirements() -> list[str]:
    """krnet's own dependencies, as pyproject.toml declares them, markers dropped.

    pip evaluates markers for the interpreter it runs on, not the target; and one site-packages
    serves every target, so what any of them needs (tomli, before 3.11) is always carried.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [requirement.split(";")[0].strip() for requirement in project["dependencies"]]


def lock() -> None:
    """Resolve for the oldest target, then find every target's wheel of each pinned version."""
    resolved = report(project_requirements(), target_args(TARGETS[0]), deps=True)
    pins = {item["name"]: item["version"] for item in resolved if item["name"] not in DROPPED}
    hashes: dict[str, set[str]] = defaultdict(set)
    pure = [f"{name}=={pins[name]}" for name in sorted(PURE)]
    for item in report(pure, PURE_ARGS, deps=False):
        hashes[item["name"]].add(item["sha256"])
    rest = [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in PURE]
    for target in TARGETS:
        for item in report(rest, target_args(target), deps=False):
            hashes[item["name"]].add(item["sha256"])
    lines = [
        "# The wheels inside dist/krnet.pyz, for every target in scripts/zipapp_wheels.py.",
        "# Generated by `python scripts/zipapp_wheels.py lock`; build.sh fetches exactly these.",
    ]
    for name, version in sorted(pins.items()):
        lines.append(f"{name}=={version} \\")
        lines += [f"    --hash=sha256:{digest} \\" for digest in sorted(hashes[name])]
        lines[-1] = lines[-1].removesuffix(" \\")
    LOCK.write_text("\n".join(lines) + "\n")
    print(f"zipapp.lock: {len(pins)} packages for {len(TARGETS)} targets")


def locked() -> dict[str, str]:
    """zipapp.lock's requirement lines, hashes included, by project name."""
    text = LOCK.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    return {canonical(line.split("==")[0]): line for line in lines}


def fetch(targets: tuple[str, ...]) -> list[Path]:
    """Download (or find in the cache) every locked wheel: pure ones once, compiled per target."""
    requirements = locked()
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        selections = [(sorted(PURE), PURE_ARGS)] + [
            (sorted(set(requirements) - PURE), target_args(target)) for target in targets
        ]
        for names, selection in selections:
            requirement_file = Path(scratch) / "requirements.txt"
            requirement_file.write_text("\n".join(requirements[name] for name in names) + "\n")
            pip("download", "--quiet", "--no-deps", "--require-hashes", "-d", str(WHEEL_CACHE),
                *selection, "-r", str(requirement_file))  # fmt: skip
    allowed = {
        digest for line in requirements.values() for digest in re.findall(r"sha256:(\w+)", line)
    }
    wheels = [
        path
        for path in sorted(WHEEL_CACHE.glob("*.whl"))
        if hashlib.sha256(path.read_bytes()).hexdigest() in allowed
    ]
    return [wheel for wheel in wheels if serves(wheel, targets)]


def serves(wheel: Path, targets: tuple[str, ...]) -> bool:
    """Whether a wheel is pure or built for one of these targets."""
    tags = wheel.stem.split("-")
    if tags[-1] == "any":
        return True
    abis = {abi(target) for target in targets}
    arches = {target.split("-")[1] for target in targets}
    return tags[-2] in abis and any(tags[-1].endswith(arch) for arch in arches)


def unpack(wheel: Path, site: Path) -> None:
    """Unpack one wheel's importable files; a different file at a path already taken is an error.

    Each target's wheel of one package carries the same Python files and its own extension
    modules; only its metadata (WHEEL tags, RECORD hashes) differs, and the first one stays.
    """
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            name = member.filename
            data_dir = re.match(r"[^/]+\.data/(purelib|platlib)/", name)
            if data_dir:
                name = name[data_dir.end() :]
            elif re.match(r"[^/]+\.data/", name) or member.is_dir():
                continue  # scripts, headers and data files have no use inside a zipapp
            path = site / name
            content = archive.read(member)
            if path.exists():
                if path.read_bytes() == content or ".dist-info/" in name:
                    continue
                raise SystemExit(
                    f"zipapp_wheels: {wheel.name} has another {name} than a wheel before it"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o644)


def check_extensions(site: Path, targets: tuple[str, ...]) -> list[str]:
    """Every compiled module must exist once per target; returns one line per module."""
    tags = {f"cpython-{abi(target)[2:]}-{target.split('-')[1]}-linux-gnu" for target in targets}
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(site.rglob("*.so")):
        match = re.fullmatch(r"(.+)\.(cpython-[^.]+)\.so", str(path.relative_to(site)))
        if not match:
            raise SystemExit(f"zipapp_wheels: {path.name} names no CPython ABI; it would clash")
        found[match.group(1)].add(match.group(2))
    lines = []
    for module, abis in sorted(found.items()):
        if abis != tags:
            raise SystemExit(f"zipapp_wheels: {module} lacks {sorted(tags - abis)}")
        lines.append(f"{module}: {len(abis)} targets")
    return lines


def stage(site: Path, krnet_wheel: Path) -> None:
    """Fill SITE with krnet and every locked dependency for the chosen targets."""
    chosen = os.environ.get("KRNET_TARGETS", "").split() or list(TARGETS)
    unknown = set(chosen) - set(TARGETS)
    if unknown:
        raise SystemExit(f"zipapp_wheels: KRNET_TARGETS names {sorted(unknown)}; known: {TARGETS}")
    targets = tuple(target for target in TARGETS if target in chosen)
    site.mkdir(parents=True, exist_ok=True)
    for wheel in [krnet_wheel, *fetch(targets)]:
        unpack(wheel, site)
    for line in check_extensions(site, targets):
        print(f"  compiled {line}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("lock", help="resolve again and rewrite zipapp.lock")
    staging = commands.add_parser("stage", help="fill a site-packages dir for shiv")
    staging.add_argument("site", type=Path)
    staging.add_argument("krnet_wheel", type=Path)
    args = parser.parse_args()
    if args.command == "lock":
        lock()
    else:
        stage(args.site, args.krnet_wheel)


if __name__ == "__main__":
    main()
