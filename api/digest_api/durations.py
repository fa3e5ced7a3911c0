"""Durations as the pipeline spec writes them (the Prometheus syntax: `90s`, `5m`, `1h30m`, `7d`)."""

from __future__ import annotations

import datetime
import re

_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")


def parse_duration(text: str) -> datetime.timedelta:
    """Prometheus-style duration (`90s`, `5m`, `1h30m`, `7d`, `1w`), the syntax of the pipeline spec."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 2h or 7d")
    years, weeks, days, hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return datetime.timedelta(weeks=weeks, days=days + 365 * years, hours=hours, minutes=minutes, seconds=seconds,
                              milliseconds=millis)
