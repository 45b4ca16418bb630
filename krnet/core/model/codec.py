"""Frozen dataclasses to and from plain JSON values, losslessly, by their type hints.

A field added to a value is carried without touching this module. Datetimes travel as ISO 8601
with their offset; mapping keys as strings (ints restored).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")


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


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode_dataclass(cls: type[D], data: Any, where: str) -> D:
    """The `cls` value `encode` turned into `data`; ValueError names the field that is wrong."""
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
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return decode_dataclass(hint, value, where)
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
