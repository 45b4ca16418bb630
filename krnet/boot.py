"""The zipapp's entry point: check the interpreter before anything imports a dependency.

Standard library only, and it must parse and run on Python 3.7 (see `krnet.interpreter`): on
an interpreter the file does not serve, one line and exit 2, never a traceback.
"""

from __future__ import annotations

import sys

from krnet.interpreter import EXIT_UNSUPPORTED, unsupported


def main() -> int:
    """Refuse an interpreter the file does not serve (exit 2), else run the command line."""
    problem = unsupported()
    if problem:
        sys.stderr.write(problem + "\n")
        return EXIT_UNSUPPORTED
    from krnet.cli import main as cli_main

    return cli_main()
