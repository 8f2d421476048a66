"""The one check for every number carbonrun takes in: finite, and within the range that makes sense.

Flags, CARBONRUN_* variables, config files, track() options, provider answers, intensity files, gate
baselines and records read back all pass through `number`, so a NaN, an infinity or a value that would
overflow later (1e308 g/kWh) is refused where it enters, with the reason, instead of surfacing as a
stored NaN, a "damaged" store or an OverflowError deep in a run. Callers add the source (flag, env
variable, file and line) to the ValueError's message.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional


class Range(NamedTuple):
    """Inclusive bounds; None is unbounded on that side (a NaN or an infinity is never in range)."""

    low: Optional[float]
    high: Optional[float]


# Ranges shared by several sources. Generous on purpose: they reject the absurd, not the unusual.
G_PER_KWH = Range(0.0, 5000.0)  # grid intensity; the dirtiest grids are about 1,200 g CO2eq/kWh
UNIX_TIME = Range(0.0, 253402300799.0)  # 1970 to the end of year 9999 (what datetime can show)
STEP_S = Range(1.0, 366 * 86400.0)  # a provider's or a series' data period
INTERVAL_S = Range(0.001, 3600.0)
PUE = Range(1.0, 10.0)
EMBODIED_KG = Range(0.0, 1e7)
LIFETIME_YEARS = Range(0.1, 100.0)
SCC_USD_PER_T = Range(0.0, 1e6)
DURATION_S = Range(1e-3, 366 * 86400.0)
TIMEOUT_S = Range(0.001, 600.0)  # one HTTP request, all of it
SAMPLE = Range(0.0, 1e12)  # one run's figure (kWh, kg, s, W) in a gate baseline: never negative


def number(value: Any, bounds: Range = Range(None, None), what: str = "value") -> float:
    """`value` as a finite float within `bounds`; ValueError saying why otherwise.

    Accepts ints, floats and numeric strings; refuses booleans (TOML `true` is not 1), NaN and infinities
    however spelled, and anything float() cannot read.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not {str(value).lower()}")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} must be a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number")
    low, high = bounds
    if low is not None and x < low:
        raise ValueError(f"{what} must be at least {low:g}")
    if high is not None and x > high:
        raise ValueError(f"{what} must be at most {high:g}")
    return x


def is_sane(value: Any, bounds: Range = Range(None, None)) -> bool:
    """True when number() would accept `value` (for tolerant readers that skip instead of failing)."""
    try:
        number(value, bounds)
    except ValueError:
        return False
    return True
