"""Whether a namespace lab can run here: shared by `krnet demo`, the benchmarks and the tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable


def missing_prerequisites(tools: Iterable[str]) -> str | None:
    """Why a lab cannot run on this machine (not root, tools missing), or None when it can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return f"needs {', '.join(missing)} installed" if missing else None
