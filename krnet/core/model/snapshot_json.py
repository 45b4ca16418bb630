"""NodeSnapshot to and from plain JSON, losslessly: recorded test fixtures and the remote TUI.

The codec (`krnet.core.model.codec`) walks the snapshot's frozen dataclasses by their type
hints, so a field added to a snapshot value is carried without touching this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from krnet.core.model.codec import decode_dataclass, encode
from krnet.core.model.snapshot import NodeSnapshot

FORMAT_VERSION = 1


def snapshot_to_json(snapshot: NodeSnapshot) -> dict[str, Any]:
    """A JSON-ready dict of the whole snapshot, tagged with the format version."""
    return {"format": FORMAT_VERSION, **encode(snapshot)}


def snapshot_from_json(data: Mapping[str, Any]) -> NodeSnapshot:
    """The snapshot `snapshot_to_json` made; raises ValueError naming the field that is wrong."""
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"snapshot format {data.get('format')!r} is not {FORMAT_VERSION}")
    fields = {key: value for key, value in data.items() if key != "format"}
    return decode_dataclass(NodeSnapshot, fields, "snapshot")


def dumps(snapshot: NodeSnapshot) -> str:
    """Stable, readable JSON text (sorted keys) so recorded fixtures diff well."""
    return json.dumps(snapshot_to_json(snapshot), indent=1, sort_keys=True) + "\n"


def loads(text: str) -> NodeSnapshot:
    return snapshot_from_json(json.loads(text))


def load_file(path: Path) -> NodeSnapshot:
    """A recorded snapshot from a file."""
    return loads(path.read_text(encoding="utf-8"))
