"""Human units for energy, mass and money: the same scaling and precision in every report.

A figure carries as many significant digits as its uncertainty allows: an exact counter four, a
+/-50% estimate two (`digits_for`). Scaling is the same everywhere: J, Wh, kWh for energy; mg, g,
kg for mass; never exponent notation, so a figure can be pasted into prose. An estimate is marked
with `~` (ESTIMATE) wherever it appears in a table.
"""
from __future__ import annotations

import math
from math import floor, isfinite, log10
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from carbonrun import units as core_units
from carbonrun.units import J_PER_KWH as J_PER_KWH  # re-exported: reports convert with it
# Defined once for every layer, in carbonrun/units.py; the reports use them from here:
from carbonrun.units import energy_bounds as energy_bounds  # (kWh, low, high) including PUE
from carbonrun.units import measured_label as measured_label

ESTIMATE = "~"
ESTIMATED = ("estimated", "partly estimated")  # the measured labels a `~` marks
SMALLEST_USD = 1e-6
ENERGY_UNITS: Tuple[Tuple[str, float], ...] = (("kWh", 1.0), ("Wh", 1e-3), ("J", 1 / J_PER_KWH))  # unit, kWh each
MASS_UNITS: Tuple[Tuple[str, float], ...] = (("kg", 1.0), ("g", 1e-3), ("mg", 1e-6))  # unit, kg each
# Per precision, computed once: a value rounds up into the next unit from this fraction of it on
# (0.99995 at four digits), and a mantissa can round up to 10 only from this log10 on (a bound below
# log10(9.9995), so that a figure that might carry is always checked exactly).
_ROUNDS_UP = {d: 1 - 0.5 * 10.0 ** (1 - d) for d in range(1, 16)}
_NINES = {d: math.log10(10 - 10.0 ** (1 - d)) - 1e-9 for d in range(1, 16)}


def round_sig(x: float, digits: int) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def sig(x: float, digits: int = 4) -> str:
    """x to `digits` significant figures, thousands separated, never in exponent notation.

    Integer parts are rounded too (12,345 at two digits is 12,000), so no figure claims more
    precision than it has. One log10 and one format per call: a listing formats 200,000 of them."""
    if x == 0:
        return "0"
    if not isfinite(x):
        return str(x)
    magnitude = log10(abs(x))
    power = floor(magnitude)
    decimals = digits - 1 - power
    # Rounding carries into the next power of ten (9.9996 -> 10.00) only when the leading digits are
    # all nines, i.e. when the log's fraction is near 1: the exact (slower) check runs only then.
    if magnitude - power >= _NINES.get(digits, 0.0) and round(abs(x), decimals) >= 10 ** (digits - decimals):
        decimals -= 1
    if decimals <= 0:
        return f"{round(x, decimals):,.0f}"
    return f"{x:,.{decimals}f}"


def digits_for(mid: float, low: Optional[float] = None, high: Optional[float] = None) -> int:
    """Significant digits the range [low, high] around mid allows: 4 exact, 3 within 10%, else 2."""
    if low is None or high is None or mid <= 0:
        return 4
    rel = max(mid - low, high - mid) / mid
    return 4 if rel < 0.005 else 3 if rel < 0.1 else 2


def _unit(value: float, table: Sequence[Tuple[str, float]], digits: int) -> Tuple[str, float]:
    """The largest unit in which the value, rounded to `digits`, is at least 1 (the smallest for tiny values)."""
    v = abs(value) / (_ROUNDS_UP.get(digits) or 1 - 0.5 * 10.0 ** (1 - digits))  # 999.96 Wh at 4 digits: 1.000 kWh
    for name, size in table:
        if v >= size:
            return name, size
    return table[-1]


def energy_unit(values: Iterable[float], digits: int = 4) -> Tuple[str, float]:
    """One unit for several kWh figures (a row of a comparison): the one that fits the smallest non-zero."""
    nonzero = [abs(v) for v in values if v]
    return _unit(min(nonzero), ENERGY_UNITS, digits) if nonzero else ENERGY_UNITS[-1]


def mass_unit(values: Iterable[float], digits: int = 4) -> Tuple[str, float]:
    nonzero = [abs(v) for v in values if v]
    return _unit(min(nonzero), MASS_UNITS, digits) if nonzero else MASS_UNITS[-1]


def _scaled(value: float, table: Sequence[Tuple[str, float]], digits: int, unit: Optional[str]) -> str:
    if value == 0:
        return f"0 {unit or table[-1][0]}"
    name, size = next(u for u in table if u[0] == unit) if unit else _unit(value, table, digits)
    return f"{sig(value / size, digits)} {name}"


def energy(kwh: float, digits: int = 4, unit: Optional[str] = None) -> str:
    """kWh as J below 1 Wh, Wh below 1 kWh, else kWh; `unit` forces one."""
    return _scaled(float(kwh or 0.0), ENERGY_UNITS, digits, unit)


def joules(j: float, digits: int = 4, unit: Optional[str] = None) -> str:
    return energy(float(j or 0.0) / J_PER_KWH, digits, unit)


def mass(kg: float, digits: int = 4, unit: Optional[str] = None) -> str:
    """kg CO2eq as mg below 1 g, g below 1 kg, else kg; `unit` forces one."""
    return _scaled(float(kg or 0.0), MASS_UNITS, digits, unit)


def usd(x: float, digits: int = 2) -> str:
    """Dollars: cents from $1 up, significant digits below, and "< $0.000001" under a millionth."""
    x = float(x or 0.0)
    if x <= 0:
        return "$0"
    if x < SMALLEST_USD:
        return "< $0.000001"
    if round_sig(x, digits) >= 1:
        return f"${x:,.2f}"
    return f"${sig(x, digits)}"


def watts(w: float, digits: int = 3) -> str:
    return f"{sig(w, digits)} W" if abs(w) >= 0.01 or w == 0 else "0 W"


def span(fmt: Callable[..., str], mid: float, low: Optional[float], high: Optional[float], digits: int,
         suffix: str = "") -> str:
    """"~0.11 Wh CO2eq (0.055 to 0.17 Wh)" for an estimate, "0.1103 Wh" for an exact figure.

    `fmt(value, digits, unit)` is energy or mass; the range shares the middle figure's unit, and
    `suffix` follows the middle figure."""
    text = fmt(mid, digits)
    if low is None or high is None or mid == 0 or (math.isclose(low, mid, rel_tol=1e-9)
                                                   and math.isclose(high, mid, rel_tol=1e-9)):
        return text + suffix
    return f"{ESTIMATE}{text}{suffix} ({between(fmt, low, high, digits, text.rsplit(' ', 1)[-1])})"


def between(fmt: Callable[..., str], low: float, high: float, digits: int, unit: Optional[str] = None) -> str:
    """"0.055 to 0.17 Wh": both ends in one unit (the high end's, unless given)."""
    unit = unit or fmt(high, digits).rsplit(" ", 1)[-1]
    return f"{fmt(low, digits, unit).rsplit(' ', 1)[0]} to {fmt(high, digits, unit)}"


def intensity(g: float) -> str:
    """Grid intensity in g CO2eq/kWh: whole grams, two significant digits below 10 g."""
    g = float(g)
    return f"{g:,.0f}" if g >= 10 or g == 0 else sig(g, 2)


def duration(s: float) -> str:
    s = float(s or 0.0)
    if s < 59.95:  # what would round to "60.0 s" reads "1m00s", and to "10.00 s", "10.0 s"
        return f"{s:.2f} s" if s < 9.995 else f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def run_label(record: dict, kept: str = "run (kept for `carbonrun sync`)", lost: str = "run (not stored)") -> str:
    """"run #12"; a run the store could not take but a spool or private file keeps, until `carbonrun sync`
    puts it in the store (a note says where); or a run kept nowhere (--no-store, or every fallback failed)."""
    if record.get("id") is not None:
        return f"run #{record['id']}"
    waits = any(str(n).startswith("the run store") and "`carbonrun sync`" in str(n) for n in record.get("notes") or [])
    return kept if waits else lost


def never_started(record: dict) -> bool:
    """The command could not be found or executed (exit 126/127 before any sample)."""
    return did_not_start(record.get("exit_code"), record.get("samples"), (record.get("energy") or {}).get("total_kwh"))


def did_not_start(exit_code: Any, samples: Any, total_kwh: Any) -> bool:
    """never_started from the fields themselves (a listing's Summary row has them)."""
    return exit_code in (126, 127) and not samples and not float(total_kwh or 0.0)


def counted(record: dict) -> list:
    return core_units.counted_components(record)


def counted_j_by_kind(record: dict) -> Dict[str, float]:
    """Joules per component kind as the run counts them (job or machine, by attribution; psys aside)."""
    out: Dict[str, float] = {}
    for c in counted(record):
        out[c["component"]] = out.get(c["component"], 0.0) + core_units.counted_j(c, record.get("attribution"))
    return out


def is_estimated(record: dict) -> bool:
    return measured_label(record) in ESTIMATED


def mass_bounds(record: dict) -> Tuple[float, float, float]:
    em = record.get("emissions") or {}
    kg = float(em.get("kg") or 0.0)
    return kg, float(em.get("low_kg", kg) or 0.0), float(em.get("high_kg", kg) or 0.0)


def record_digits(record: dict) -> int:
    """The precision a run's figures get: from its energy range (the intensity's is not known)."""
    return digits_for(*energy_bounds(record))


def figures(record: dict) -> Dict[str, str]:
    """The run's headline figures as every report words them: energy, emissions, their ranges."""
    d = record_digits(record)
    return {"energy": span(energy, *energy_bounds(record), d),
            "emissions": span(mass, *mass_bounds(record), d, " CO2eq"),
            "energy_value": energy(energy_bounds(record)[0], d), "emissions_value": mass(mass_bounds(record)[0], d),
            "mark": ESTIMATE if is_estimated(record) else ""}
