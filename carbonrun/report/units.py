"""Human units for energy, mass and money: the same wording in every report."""
from __future__ import annotations

import math


def energy(kwh: float) -> str:
    if kwh >= 1:
        return f"{kwh:,.3f} kWh"
    wh = kwh * 1000
    if wh >= 1:
        return f"{wh:.3f} Wh"
    return f"{wh * 1000:.3f} mWh"


def joules(j: float) -> str:
    return energy(j / 3.6e6)


def mass(kg: float) -> str:
    if kg >= 1:
        return f"{kg:,.3f} kg"
    g = kg * 1000
    if g >= 1:
        return f"{g:.3f} g"
    return f"{g * 1000:.3f} mg"


def usd(x: float) -> str:
    """Dollars with two significant digits however small (no scientific notation)."""
    if x >= 1:
        return f"${x:,.2f}"
    if x <= 0:
        return "$0"
    decimals = max(2, 1 - math.floor(math.log10(x)))
    return f"${x:.{decimals}f}"


def duration(s: float) -> str:
    if s < 60:
        return f"{s:.2f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def measured_label(record: dict) -> str:
    comps = [c for c in record.get("components", []) if c.get("counted", True)]
    if not comps:
        return "unmeasured"
    est = [c["estimated"] for c in comps]
    return "estimated" if all(est) else ("partly estimated" if any(est) else "measured")
