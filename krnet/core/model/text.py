"""Strings from the network, made safe to print: every control character shown as an escape.

A hostname, an `observed` value or an `error` message reaches logs, terminals and tables; raw,
a newline would forge a log line and an escape sequence would drive the operator's terminal.
"""

from __future__ import annotations

import unicodedata

_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}  # controls, format, separators, others


def printable(text: str) -> str:
    """`text` with each control or invisible format character as a visible escape (`\\x1b`,
    `\\n`, `\\u202e`); everything else unchanged."""
    if text.isprintable():
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == " " or unicodedata.category(char) not in _UNPRINTABLE:
        return char
    code = ord(char)
    if char in "\n\r\t":
        return repr(char)[1:-1]
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )
