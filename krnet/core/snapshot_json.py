"""NodeSnapshot to and from plain JSON, losslessly: recorded test fixtures and the remote TUI.

The codec walks the snapshot's frozen dataclasses by their type hints, so a field added to
`krnet.core.snapshot` or `krnet.core.records` is carried without touching this module.
Datetimes travel as ISO 8601 with their offset; mapping keys as strings (ints restored).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from krnet.config import Settings
from krnet.core.snapshot import NodeSnapshot

FORMAT_VERSION = 1


def snapshot_to_json(snapshot: NodeSnapshot) -> dict[str, Any]:
    """A JSON-ready dict of the whole snapshot, tagged with the format version."""
    return {"format": FORMAT_VERSION, **encode(snapshot)}


def snapshot_from_json(data: Mapping[str, Any]) -> NodeSnapshot:
    """The snapshot `snapshot_to_json` made; raises ValueError naming the field that is wrong."""
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"snapshot format {data.get('format')!r} is not {FORMAT_VERSION}")
    fields = {key: value for key, value in data.items() if key != "format"}
    return _decode_dataclass(NodeSnapshot, fields, "snapshot")


def dumps(snapshot: NodeSnapshot) -> str:
    """Stable, readable JSON text (sorted keys) so recorded fixtures diff well."""
    return json.dumps(snapshot_to_json(snapshot), indent=1, sort_keys=True) + "\n"


def loads(text: str) -> NodeSnapshot:
    return snapshot_from_json(json.loads(text))


def load_file(path: Path) -> NodeSnapshot:
    """A recorded snapshot from a file."""
    return loads(path.read_text(encoding="utf-8"))


def encode(value: Any) -> Any:
    """Any snapshot value (dataclass, datetime, mapping, tuple) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


# NodeSnapshot.settings is typed Any to keep snapshot.py free of config imports.
_FIELD_OVERRIDES: dict[tuple[type, str], Any] = {(NodeSnapshot, "settings"): Settings}


@cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    for (owner, name), hint in _FIELD_OVERRIDES.items():
        if owner is cls:
            hints[name] = hint
    return hints


def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    values = {name: decode(hints[name], item, f"{where}.{name}") for name, item in data.items()}
    return cls(**values)


def decode(hint: Any, value: Any, where: str = "value") -> Any:
    """The value of type `hint` that `encode` turned into `value`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object or origin is typing.Literal:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return decode(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, where)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is float:
        return float(value)
    if origin is tuple:
        return tuple(decode(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping):
        key_hint, item_hint = args
        return {
            _decode_key(key_hint, key): decode(item_hint, item, f"{where}[{key}]")
            for key, item in value.items()
        }
    return value


def _decode_key(hint: Any, key: str) -> Any:
    return int(key) if hint is int else key
