"""Times and durations as people write them, once: ISO 8601 out, durations and ages in.

One grammar for durations everywhere (`--start-within`, `--expected-duration`, `history --since`, config
files): "90s", "30m", "6h", "1h30m", "2d", "1w", or a bare number of seconds.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
DURATION_HELP = "like 90s, 30m, 6h, 1h30m, 2d"


def iso(t: float, *, utc: bool = False, timespec: str = "seconds") -> str:
    """Unix seconds as ISO 8601.

    Local time with its offset by default (what a reader of a record or a plan expects); utc=True gives
    the "Z" form that notes and provider APIs use. timespec as datetime.isoformat: minutes, seconds,
    milliseconds.
    """
    when = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    if utc:
        return when.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"
    return when.astimezone().isoformat(timespec=timespec)


def parse_duration(text: Any) -> float:
    """Seconds from a duration (see the module doc); ValueError unless it is finite and more than zero."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(s)
        except ValueError:
            parts = _PART.findall(s)
            if not s or "".join(n + u for n, u in parts) != s:
                raise ValueError(f"{text!r} is not a duration ({DURATION_HELP})") from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Compact, for plans and countdowns: 45s, 12m30s, 3h10m, 2d04h."""
    s = max(0, int(round(seconds)))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def parse_since(text: str, now: float) -> float:
    """Unix time from an age ("7d", "1h30m": that long before now) or an ISO date/time.

    A date without an offset is local time, as a person typing a date means. ValueError saying both
    forms otherwise.
    """
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: use an ISO date (2024-05-01, 2024-05-01T14:00) or an age "
                         f"({DURATION_HELP})") from None
    return when.timestamp()

