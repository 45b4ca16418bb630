"""Import contracts (after Harlequin): the core never needs the UI, `--help` needs nothing heavy.

Each check runs in a fresh interpreter and inspects `sys.modules`, so an import hidden
anywhere in the chain (not only at the top of a file) is caught.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import krnet.core

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("docker", "pyroute2", "sqlalchemy", "sqlmodel", "alembic", "textual", "pydantic")
HEADLESS = ("krnet.commands.doctor", "krnet.commands.serve", "krnet.commands.status")


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
