"""Carbon impact statement (Henderson et al., 2020) for a run, ready to paste into a paper.

"This work contributed X kg of CO2eq to the atmosphere and used Y kWh of electricity, having a
<region>-specific social cost of carbon of $Z ($low, $high)." followed by one line of method and basis,
so a reader can tell where the intensity and the dollar figures came from.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any, Callable, Dict, Optional

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"


def number(x: float, digits: int = 3) -> str:
    """x to `digits` significant figures without scientific notation (papers quote 0.000123 kg)."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def money(x: float) -> str:
    """Dollars: cents from a cent up, significant figures below (a short run costs far less)."""
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${number(x, 2)}"


def region_name(region: Optional[str]) -> Optional[str]:
    """The table's name for a region key ("FR" -> "France"), else the label as recorded."""
    if not region:
        return None
    try:
        from carbonrun.intensity.regions import UnknownRegion, lookup

        return lookup(region).name
    except (UnknownRegion, OSError, ValueError):
        return region


def facts(record: Dict[str, Any]) -> Dict[str, Any]:
    """The figures the statement needs, with the social cost computed when the record lacks it."""
    kwh = float(record.get("energy", {}).get("total_kwh") or 0.0)
    kg = float(record.get("emissions", {}).get("kg") or 0.0)
    intensity = record.get("intensity") or {}
    cost = record.get("social_cost_usd")
    if not cost or cost.get("central") is None:
        from carbonrun.intensity.carbon import social_cost

        cost = social_cost(kg)
    return {"kwh": kwh, "kg": kg, "cost": cost, "intensity": intensity,
            "region": region_name(intensity.get("region")), "source": intensity.get("source") or "unknown"}


def sentence(f: Dict[str, Any], esc: Callable[[str], str] = str, co2: str = "CO2eq", nbsp: str = " ",
             dollar: str = "$") -> str:
    """The statement itself; `esc` and the unit spellings let the LaTeX variant reuse it."""
    c = f["cost"]

    def usd(x: float) -> str:
        return dollar + esc(money(x)[1:])

    costs = f"{usd(c['central'])} ({usd(c['low'])}, {usd(c['high'])})"
    if f["region"]:
        cost_phrase = f"having a {esc(f['region'])}-specific social cost of carbon of {costs}"
    else:
        cost_phrase = f"having a social cost of carbon of {costs}"
        if f["source"] == "world-average":
            cost_phrase += " at the world-average grid intensity"
    return (f"This work contributed {esc(number(f['kg']))}{nbsp}kg of {co2} to the atmosphere and used "
            f"{esc(number(f['kwh']))}{nbsp}kWh of electricity, {cost_phrase}.")


def method(f: Dict[str, Any]) -> str:
    """One line: which intensity, why, and the basis of the dollar figures."""
    i = f["intensity"]
    g = i.get("g_per_kwh")
    grid = f"{number(float(g))} g CO2eq/kWh" if g is not None else "unknown intensity"
    how = f"; {i['how']}" if i.get("how") else ""
    return (f"Method: grid intensity {grid} ({f['source']}{how}). Social cost: {f['cost'].get('basis', 'unstated')}. "
            "Statement after Henderson et al. (2020).")


def render(record: Dict[str, Any], *, color: bool = False, width: int = 100) -> str:
    f = facts(record)
    text = textwrap.fill(sentence(f), width=max(width, 20))
    note = textwrap.fill(method(f), width=max(width, 20))
    if color:
        text, note = f"{_BOLD}{text}{_RESET}", f"{_DIM}{note}{_RESET}"
    return f"{text}\n\n{note}\n"
