"""Import contracts (after Harlequin): the layers of krnet/core, the UI on top, `--help` light.

Two kinds of check. A static scan reads every `import` and `from` in every module of krnet
(`ast`, so imports inside functions and under TYPE_CHECKING count too) and checks who may
import whom. A fresh interpreter per check inspects `sys.modules`, so a heavy package pulled in
anywhere along the chain is caught.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import krnet.core

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "docker",
    "pyroute2",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "textual",
    "pydantic",
    "prometheus_client",
)
HEADLESS = ("krnet.commands.doctor", "krnet.commands.serve", "krnet.commands.status")

# What each layer may import besides itself, `krnet.errors` and the `krnet` package (which only
# holds `__version__`). Layers not named here (control, commands, cli, lab) may import any
# layer below the UI; `test_nothing_imports_the_tui_or_the_commands` keeps the top.
MAY_IMPORT = {
    "model": set(),
    "protocol": {"model"},
    "record": {"model"},
    "dataplane": {"model"},
    "config": {"model"},
    "observe": {"model", "record", "dataplane"},
    "tui": {"observe", "model"},
}
ALWAYS = {"errors", "krnet"}
# observe reads the record through the reader (the package's `load_runners` is the reader, or
# the store for a record behind head), never the store itself
RECORD_FOR_OBSERVE = {"krnet.core.record", "krnet.core.record.reader"}
# the entry points: boot (the interpreter check) and __main__ start cli, cli dispatches to a
# command, and `krnet tui` opens the TUI
TOP_ENTRIES = {
    ("cli", "commands"),
    ("commands.tui", "tui"),
    ("__main__", "cli"),
    ("boot", "cli"),
}


def modules() -> dict[str, Path]:
    """Every module of krnet by dotted name, with its file."""
    found = {}
    for path in sorted((ROOT / "krnet").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_in(source: str, name: str, *, is_package: bool, known: set[str]) -> set[str]:
    """The krnet modules `source` (module `name`) imports anywhere: top level, functions, blocks."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module == "krnet" or module.startswith("krnet.")}


def import_graph() -> dict[str, set[str]]:
    """Who imports whom, among krnet's own modules."""
    files = modules()
    known = set(files)
    return {
        name: imports_in(path.read_text(), name, is_package=path.name == "__init__.py", known=known)
        for name, path in files.items()
    }


def layer(module: str) -> str:
    """`model`, `record`, ... for krnet/core; `tui`, `commands`, `config`, `cli`, ... else."""
    parts = module.split(".")
    if len(parts) == 1:
        return "krnet"
    if parts[1] == "core":
        return parts[2] if len(parts) > 2 else "core"
    return parts[1]


def edges() -> Iterator[tuple[str, str]]:
    for importer, imported in import_graph().items():
        for module in sorted(imported):
            yield importer, module


def test_the_scan_sees_imports_in_functions_and_under_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from krnet.core.record.store import Store\n"
        "def later():\n    import krnet.tui.app\n    from . import plan\n"
    )
    known = {"krnet.core.model.plan", "krnet.core.record.store", "krnet.tui.app"}
    found = imports_in(source, "krnet.core.model.settings", is_package=False, known=known)
    assert found == known


def test_each_layer_imports_only_what_is_below_it() -> None:
    violations = [
        f"{importer} imports {imported}"
        for importer, imported in edges()
        if layer(importer) in MAY_IMPORT
        and layer(imported) not in MAY_IMPORT[layer(importer)] | ALWAYS | {layer(importer)}
    ]
    assert not violations, "\n".join(violations)


def test_the_data_plane_never_imports_the_record() -> None:
    violations = [
        f"{importer} imports {imported}"
        for importer, imported in edges()
        if layer(importer) == "dataplane" and layer(imported) == "record"
    ]
    assert not violations, "\n".join(violations)


def test_observe_reads_the_record_only_through_the_reader() -> None:
    violations = [
        f"{importer} imports {imported}"
        for importer, imported in edges()
        if layer(importer) == "observe"
        and layer(imported) == "record"
        and imported not in RECORD_FOR_OBSERVE
    ]
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_tui_or_the_commands() -> None:
    def place(module: str) -> str:
        return "commands.tui" if module == "krnet.commands.tui" else layer(module)

    violations = [
        f"{importer} imports {imported}"
        for importer, imported in edges()
        if layer(imported) in {"tui", "commands", "cli"}
        and layer(importer) != layer(imported)
        and (place(importer), layer(imported)) not in TOP_ENTRIES
    ]
    assert not violations, "\n".join(violations)


def test_there_are_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert [" -> ".join(cycle) for cycle in cycles] == []


def loaded_after(code: str) -> set[str]:
    """Top-level package names in sys.modules after running `code` in a new interpreter."""
    report = "import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\n{report}"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def core_modules() -> list[str]:
    found = pkgutil.walk_packages(krnet.core.__path__, prefix="krnet.core.")
    return sorted(info.name for info in found)


def test_every_core_module_exists_to_be_checked() -> None:
    assert {
        "krnet.core.observe.diagnose.engine",
        "krnet.core.observe.gather",
        "krnet.core.model.node_state",
    } <= set(core_modules())


def test_core_and_headless_commands_never_import_textual() -> None:
    modules = ["krnet.cli", *core_modules(), *HEADLESS]
    imports = "\n".join(f"import {module}" for module in modules)
    assert "textual" not in loaded_after(imports)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import contextlib, io\n"
        "from krnet.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert not set(HEAVY) & loaded_after(code)


def test_the_check_can_fail() -> None:
    assert "textual" in loaded_after("import krnet.tui.app")
