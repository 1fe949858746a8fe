"""Durations as people type them (`45s`, `30m`, `1h`, `90d`, `1h30m`), for the CLI and Lambda.

A bare number is seconds. Anything else is a `ValidationError` that shows the accepted
forms, so a cron line with a typo fails loudly instead of sweeping everything.
"""

from __future__ import annotations

import re

from orchestrator.errors import ValidationError

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in `text`: `90`, `45s`, `30m`, `1h`, `90d`, `2w`, or sums like `1h30m`.

    >>> parse_duration("1h30m"), parse_duration("90")
    (5400.0, 90.0)
    """
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise ValidationError(f"{what} is empty; use e.g. 45s, 30m, 1h or 90d")
    try:
        value = float(raw)
    except ValueError:
        pos, total = 0, 0.0
        for match in _PART.finditer(raw):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise ValidationError(
                f"{what} {text!r} is not a duration; use a number of seconds or a number with a unit "
                f"(ms, s, m, h, d, w), e.g. 45s, 30m, 1h, 90d or 1h30m"
            ) from None
        return total
    if value < 0:
        raise ValidationError(f"{what} {text!r} is negative; use 0 or more")
    return value


def format_duration(seconds: float | None) -> str:
    """A short human form: `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.

    >>> [format_duration(s) for s in (0.85, 12.34, 245, 7380, 273600)]
    ['850ms', '12.3s', '4m05s', '2h03m', '3d04h']
    """
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
