"""Reading settings from each source: the reference's Python files (never run), krnet.toml,
KRNET_* variables and flags; every value typed per its Settings field or refused with its source.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args, get_origin, get_type_hints

from krnet.core.model.settings import Settings
from krnet.errors import ConfigError

if TYPE_CHECKING:
    import ast

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# KRNET_* variables that are not settings (paths and test switches)
NON_SETTING_ENV = frozenset({"KRNET_CONFIG", "KRNET_DATA_DIR", "KRNET_REQUIRE_PRIVILEGED"})

MAX_CONFIG_BYTES = 1_048_576  # a config file is a few KiB; this bounds what a parser is fed
MAX_OPERATORS = 100  # per statement of a reference file: literals need a sign or two, not chains

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldSpec:
    """What a setting accepts: its base type, whether it may be unset, its allowed words."""

    name: str
    kind: type
    optional: bool
    choices: tuple[str, ...] = ()

    @property
    def expected(self) -> str:
        if self.choices:
            return " or ".join(self.choices)
        return {bool: "true or false", int: "a whole number", float: "a number"}.get(
            self.kind, "a string"
        )


# A layer maps each key it sets to (value, source label shown by `config show`).
Layer = dict[str, tuple[object, str]]


@cache
def field_specs() -> dict[str, FieldSpec]:
    """Every setting's FieldSpec, from the Settings annotations."""
    hints = get_type_hints(Settings)
    specs: dict[str, FieldSpec] = {}
    for f in fields(Settings):
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            specs[f.name] = FieldSpec(f.name, str, False, get_args(hint))
            continue
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        optional = bool(members)
        specs[f.name] = FieldSpec(f.name, members[0] if optional else hint, optional)
    return specs


def env_name(key: str) -> str:
    return f"KRNET_{key.upper()}"


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _close_match(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate `name` most likely misspells, ignoring case."""
    import difflib

    folded = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(name.lower(), sorted(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = _close_match(name, candidates)
    if close:
        return f"did you mean {close}?"
    return "remove it (`krnet config show` lists every setting)"


def _unknown_key(name: str, value: object, where: str, candidates: Iterable[str]) -> ConfigError:
    return ConfigError(
        f"{name} = {value!r} (from {where}) is not a krnet setting: "
        f"{_did_you_mean(name, candidates)}"
    )


def _parse_text(spec: FieldSpec, text: str) -> object:
    """A value given as text (environment, flags), parsed per the field's type."""
    word = text.strip()
    if spec.optional and not word:
        return None
    if spec.kind is bool:
        if word.lower() in TRUE_WORDS:
            return True
        if word.lower() in FALSE_WORDS:
            return False
        raise ValueError
    if spec.kind is int:
        return int(word, 10)
    if spec.kind is float:
        return _finite(float(word))
    return text


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise ValueError
    return number


def _check_typed(spec: FieldSpec, value: object) -> object:
    """A value given typed (TOML, Python literal), checked against the field's type."""
    if value is None and spec.optional:
        return None
    if isinstance(value, bool) and spec.kind is not bool:
        raise ValueError
    if spec.kind is float and isinstance(value, int | float):
        return _finite(float(value))
    if not isinstance(value, spec.kind):
        raise ValueError
    return value


def coerce(key: str, value: object, where: str, *, text: bool) -> object:
    """The value of setting `key` from one source, or a ConfigError naming that source."""
    spec = field_specs()[key]
    try:
        if text and isinstance(value, str):
            result = _parse_text(spec, value)
        else:
            result = _check_typed(spec, value)
        if spec.choices and result not in spec.choices:
            raise ValueError
    except ValueError:
        default = getattr(Settings(), key)
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        example = f", e.g. {shown} (the default)" if default is not None else ""
        words = " (as text: 1/0, true/false, yes/no, on/off)" if spec.kind is bool else ""
        raise ConfigError(
            f"{key} = {value!r} (from {where}) is not {spec.expected}: "
            f"set {key} to {spec.expected}{words}{example}"
        ) from None
    return result


def _read_text(path: Path, what: str) -> str | None:
    """A config file's text (at most MAX_CONFIG_BYTES), or None when it does not exist."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{what} {path} is larger than {MAX_CONFIG_BYTES} bytes: not a config file; "
                "fix the path or shorten the file"
            )
        return data.decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"cannot read {what} {path}: {reason}: fix the file or remove it"
        ) from None


_NOT_OPERATORS = frozenset(",:;()[]{}=.")
_WORD_OPERATORS = frozenset({"not", "and", "or", "if", "else", "in", "is", "lambda", "await"})


def _check_operator_chains(text: str, path: Path) -> None:
    """Refuse a statement with more than MAX_OPERATORS operators, naming its line, before
    Python's parser sees it: a long chain of `-`, `not` or `+` makes the parser itself run out
    of memory or recursion. Read token by token, without recursion."""
    import io
    import tokenize

    count, first_line = 0, 1
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                count, first_line = 0, token.end[0] + 1
                continue
            operator = token.type == tokenize.OP and token.string not in _NOT_OPERATORS
            if operator or (token.type == tokenize.NAME and token.string in _WORD_OPERATORS):
                count += 1
                if count > MAX_OPERATORS:
                    raise ConfigError(
                        f"{path}:{first_line}: more than {MAX_OPERATORS} operators in one "
                        "statement: krnet reads only literal assignments and never runs this "
                        "file; write the value itself, e.g. OVERLAY_MTU: int = 1450"
                    )
    except (tokenize.TokenError, SyntaxError):
        return  # not Python: ast.parse says where


def _statement_kind(node: ast.stmt) -> str:
    import ast

    if isinstance(node, ast.Import | ast.ImportFrom):
        return "an import"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return "a call"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return "a definition"
    if isinstance(node, ast.AnnAssign | ast.AugAssign | ast.Assign):
        return "an assignment krnet cannot read (one plain name per assignment, with a value)"
    return f"a statement ({type(node).__name__})"


def _assigned_names(node: ast.stmt) -> tuple[list[str], ast.expr] | None:
    """The names and value of a plain module-level assignment, else None."""
    import ast

    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        return [t.id for t in node.targets if isinstance(t, ast.Name)], node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        return [node.target.id], node.value
    return None


def reference_layer(path: Path) -> Layer:
    """Literal assignments of the reference's host_config.py / runner_config.py, never run.

    These files also hold KohakuRiver's other settings: a name krnet does not know is skipped
    unless it is close to one of krnet's (a typo), which is refused with a did-you-mean.
    """
    import ast

    text = _read_text(path, "reference config")
    if text is None:
        return {}
    _check_operator_chains(text, path)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not valid Python ({exc.msg}): fix that line"
        ) from None
    except (MemoryError, RecursionError):
        raise ConfigError(
            f"{path}:1: nested too deeply for Python's parser: krnet reads only literal "
            "assignments; write each value itself"
        ) from None
    lines = text.splitlines()
    layer: Layer = {}
    for node in tree.body:
        where = f"{path}:{node.lineno}"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a bare literal: harmless
        assignment = _assigned_names(node)
        if assignment is None:
            raise ConfigError(
                f"{where}: {_statement_kind(node)} ({lines[node.lineno - 1].strip()[:60]!r}) "
                "is not allowed: krnet reads only literal assignments such as "
                "`OVERLAY_MTU: int = 1450` and never runs this file; remove that line"
            )
        names, value_node = assignment
        value = _literal(value_node, names[0], where)
        for name in names:
            key = _reference_key(name, value, where)
            if key is not None:
                layer[key] = (coerce(key, value, where, text=False), str(path))
    return layer


def _literal(node: ast.expr, name: str, where: str) -> object:
    import ast

    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ConfigError(
            f"{where}: {name} is set to an expression ({ast.unparse(node)[:60]}), not a literal: "
            "krnet never runs this file; write the value itself, e.g. OVERLAY_MTU: int = 1450"
        ) from None


def _reference_key(name: str, value: object, where: str) -> str | None:
    """The setting an upper-case reference name sets; None for KohakuRiver's other settings."""
    names = {key.upper(): key for key in field_specs() if key != "mode"}
    if name in names:
        return names[name]
    if name.upper() == "MODE":
        raise ConfigError(
            f"{where}: {name} cannot be set here, since the mode decides which file is read: "
            "set mode in krnet.toml, KRNET_MODE or `krnet serve --mode`"
        )
    close = _close_match(name, names, cutoff=0.8)
    if name != name.upper() or close:
        raise _unknown_key(name, value, where, names)
    log.debug("%s: %s is not a krnet setting; skipped", where, name)
    return None


def typed_layer(values: Mapping[str, object], source: str, where: str | None = None) -> Layer:
    """Typed values (TOML, what `krnet init` writes): unknown keys refused with a did-you-mean."""
    layer: Layer = {}
    for key, value in values.items():
        if key not in field_specs():
            hint = (
                " (krnet.toml has no [sections]: keys go at the top)"
                if isinstance(value, dict)
                else ""
            )
            raise ConfigError(f"{_unknown_key(key, value, where or source, field_specs())}{hint}")
        layer[key] = (coerce(key, value, where or source, text=False), source)
    return layer


def toml_layer(path: Path, named_by: str | None) -> Layer:
    """krnet.toml's keys; a missing file is an error only when it was named explicitly."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        import tomli as tomllib

    text = _read_text(path, "config file")
    if text is None:
        if named_by is None:
            return {}
        raise ConfigError(
            f"config file {path} (from {named_by}) does not exist: fix {named_by}, "
            "or create it with `krnet init host` or `krnet init runner`"
        )
    try:
        return typed_layer(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}): fix the file") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(
            f"{path}: arrays or tables nested too deeply to read: fix the file"
        ) from None


def env_layer(environ: Mapping[str, str]) -> Layer:
    """KRNET_<NAME> variables; a near-miss name is logged, since it is silently unused."""
    layer: Layer = {}
    for key in field_specs():
        name = env_name(key)
        if name in environ:
            layer[key] = (coerce(key, environ[name], f"env {name}", text=True), f"env {name}")
    known = {env_name(key) for key in field_specs()} | NON_SETTING_ENV
    for name in sorted(environ):
        if name.startswith("KRNET_") and name not in known:
            close = _close_match(name, known, cutoff=0.85)
            if close:
                log.warning(
                    "%s is not a krnet setting and is ignored: did you mean %s?", name, close
                )
    return layer


def flag_layer(overrides: Mapping[str, object]) -> Layer:
    """Command-line values; None means the flag was not given."""
    layer: Layer = {}
    for key, value in overrides.items():
        if value is None:
            continue
        where = f"flag {flag_name(key)}"
        if key not in field_specs():
            raise _unknown_key(key, value, where, field_specs())
        layer[key] = (coerce(key, value, where, text=isinstance(value, str)), where)
    return layer
