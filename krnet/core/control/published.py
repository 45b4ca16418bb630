"""The runner agent's account of itself, published in the data dir for status and diagnosis.

`krnet node overlay`, `krnet doctor` and the TUI run in other processes than `krnet serve`:
they read this file back (`krnet.core.record.reader.read_runner_state`).
"""

from __future__ import annotations

import json
from pathlib import Path

from krnet.core.model.codec import encode
from krnet.core.model.runner_state import STATE_FILE, RunnerState


def publish_runner_state(data_dir: Path, state: RunnerState) -> None:
    """Write `state` where readers find it (atomic replace, never a half-written file)."""
    path = data_dir / STATE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(encode(state), indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
