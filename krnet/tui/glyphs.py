"""How health reads on screen: a glyph per status so it stays legible under NO_COLOR.

Every view marks a state with these and nothing else: `✔` fine, `▲` worth a look, `✖` broken,
`○` idle, `?` not reported yet (never `ok` for what krnet has not seen).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text

from krnet.core.observe.diagnose.check import Check, Status

GLYPH = {"pass": "✔", "warn": "▲", "fail": "✖"}
WORD = {"pass": "ok", "warn": "warn", "fail": "FAIL"}
STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}
INACTIVE_GLYPH = "○"
UNSEEN_GLYPH = "?"
UNSEEN = "not reported yet"


def health(status: Status, inactive: bool = False) -> Text:
    """`✔ ok`, `▲ warn`, `✖ FAIL` in their colours; an inactive runner without problems `○ idle`."""
    if inactive and status == "pass":
        return Text(f"{INACTIVE_GLYPH} idle", style="dim")
    return mark(status, WORD[status])


def mark(status: Status, word: str) -> Text:
    """A state in the words of its view (`✔ present`, `✖ MISSING`) behind its health's glyph."""
    return Text(f"{GLYPH[status]} {word}", style=STYLE[status])


def unseen(word: str = UNSEEN) -> Text:
    """What krnet has not seen yet: `? not reported yet`, neither ok nor a failure."""
    return Text(f"{UNSEEN_GLYPH} {word}", style="dim")


def glyph(status: Status, inactive: bool = False) -> Text:
    if inactive and status == "pass":
        return Text(INACTIVE_GLYPH, style="dim")
    return Text(GLYPH[status], style=STYLE[status])


def problem_lines(checks: list[Check] | tuple[Check, ...], limit: int | None = None) -> Text:
    """Each problem as `✖ check: detail` with its fix indented below."""
    text = Text()
    for check in list(checks)[:limit]:
        text.append(f"{GLYPH[check.status]} ", style=STYLE[check.status])
        text.append(f"{check.check}: ", style="bold")
        text.append(f"{check.detail}\n")
        if check.fix:
            text.append(f"  ↳ fix: {check.fix}\n", style="cyan")
    if limit is not None and len(checks) > limit:
        text.append(f"… and {len(checks) - limit} more\n", style="dim")
    return text


def problems_or(checks: Iterable[Check], wanted: Callable[[Check], bool], fine: str) -> Text:
    """The failing and warning checks `wanted` picks, with fixes; `fine` when there are none."""
    problems = [check for check in checks if check.status != "pass" and wanted(check)]
    return problem_lines(problems) if problems else Text(fine, style="green")
