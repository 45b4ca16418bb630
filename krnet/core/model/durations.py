"""Durations as an operator types them (`30m`, `12h`, `7d`, `1h30m`), in seconds."""

from __future__ import annotations

import re

from krnet.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_DURATION = 100 * 365 * 86_400  # seconds; beyond any runner's life, and a timedelta's range
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds in `text`: one or more NUMBER+UNIT groups (s, m, h, d, w); a UsageError else."""
    spec = text.strip().lower()
    parts = _PART.findall(spec)
    if not spec or "".join(number + unit for number, unit in parts) != spec:
        raise UsageError(
            f"{option} {text!r} is not a duration: give a number and a unit (s, m, h, d, w), "
            "e.g. 30m, 12h or 7d"
        )
    seconds = sum(int(number) * UNITS[unit] for number, unit in parts)
    if seconds > MAX_DURATION:
        raise UsageError(f"{option} {text!r} is longer than 100 years: give a shorter duration")
    return float(seconds)


def format_duration(seconds: float) -> str:
    """`seconds` as the largest units that add up to it, e.g. 90000 -> 1d1h (0 -> 0s)."""
    rest, out = int(seconds), []
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or "0s"
