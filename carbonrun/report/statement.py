"""Carbon impact statement (Henderson et al., 2020) for a run, ready to paste into a paper.

"This work contributed X of CO2eq to the atmosphere and used Y of electricity, having a social cost
of $Z ($low to $high)." An estimate says so and gives its range; a failed, interrupted or never
started run says what happened. The footnote (`method`) names the hardware measured and how, the PUE,
the grid intensity and its source, and the social cost for what it is: the US EPA's global social
cost of carbon, not a regional one.
"""
from __future__ import annotations

import math
import textwrap
from typing import Any, Callable, Dict, List, Optional, Tuple

from carbonrun.report import units
from carbonrun.units import counts_job
from carbonrun.intensity.regions import lookup, UnknownRegion
from carbonrun.intensity.carbon import DEFAULT_SCC, social_cost
from carbonrun.report.text import printable

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
EPA = ("the US EPA's global social cost of carbon (December 2023; 2020 US dollars; emission year 2020): "
       "$190 per tonne CO2 at a 2.0% discount rate (central), $120 at 2.5% and $340 at 1.5%")


def number(x: float, digits: int = 3) -> str:
    """x to `digits` significant figures without exponent notation (papers quote 0.000123 kg)."""
    return units.sig(x, digits) if math.isfinite(x) else str(x)


def money(x: float) -> str:
    return units.usd(x)


def region_name(region: Optional[str]) -> Optional[str]:
    """The table's name for a region key ("FR" -> "France"), else the label as recorded."""
    if not region:
        return None
    try:
        return lookup(region).name
    except (UnknownRegion, OSError, ValueError, LookupError):
        return region


def scc_rates(record: Dict[str, Any]) -> Optional[Tuple[float, float, float]]:
    """US$ per tonne (low, central, high) behind the record's social cost, when they can be told."""
    sc = record.get("social_cost_usd") or {}
    basis = str(sc.get("basis") or "")
    if not sc or basis.startswith("US EPA"):
        return DEFAULT_SCC
    kg = float((record.get("emissions") or {}).get("kg") or 0.0)
    if kg > 0:
        return tuple(float(sc[k]) / kg * 1000 for k in ("low", "central", "high"))  # type: ignore[return-value]
    return None


def is_epa(record: Dict[str, Any]) -> bool:
    basis = str((record.get("social_cost_usd") or {}).get("basis") or "")
    return not basis or basis.startswith("US EPA")


def scc_label(record: Dict[str, Any]) -> str:
    """A few words for a summary line: whose social cost of carbon, at what central rate."""
    rates = scc_rates(record)
    central = f" ${units.sig(rates[1], 3)}/t" if rates else ""
    return f"US EPA global SCC{central}" if is_epa(record) else f"user-supplied SCC{central}"


def facts(record: Dict[str, Any]) -> Dict[str, Any]:
    """The figures the statement needs, with the social cost computed when the record lacks it."""
    kwh, kwh_low, kwh_high = units.energy_bounds(record)
    kg, kg_low, kg_high = units.mass_bounds(record)
    intensity = record.get("intensity") or {}
    cost = record.get("social_cost_usd")
    if not cost or cost.get("central") is None:
        cost = social_cost(kg)
    exit_code = record.get("exit_code")
    started = not units.never_started(record)
    return {"kwh": kwh, "kwh_range": (kwh_low, kwh_high), "kg": kg, "kg_range": (kg_low, kg_high),
            "digits": units.digits_for(kwh, kwh_low, kwh_high), "estimated": units.is_estimated(record),
            "label": units.measured_label(record), "cost": cost, "intensity": intensity,
            "region": region_name(intensity.get("region")), "source": intensity.get("source") or "unknown",
            "status": record.get("status"), "exit_code": exit_code, "started": started,
            "duration_s": float(record.get("duration_s") or 0.0), "record": record,
            "embodied": record.get("embodied") or None}


def _figure(fmt: Callable[..., str], value: float, rng: Tuple[float, float], digits: int, estimated: bool) -> str:
    """"1.234 Wh" measured; "an estimated 0.40 J (0.20 to 0.59 J)" estimated."""
    text = fmt(value, digits)
    low, high = rng
    if not estimated or (math.isclose(low, value) and math.isclose(high, value)):
        return text
    unit = text.rsplit(" ", 1)[-1]
    return f"an estimated {text} ({fmt(low, digits, unit).rsplit(' ', 1)[0]} to {fmt(high, digits, unit)})"


def _what_happened(f: Dict[str, Any]) -> str:
    status, code, took = f["status"], f["exit_code"], units.duration(f["duration_s"])
    if status == "failed":
        return f" (a run that failed with exit code {code} after {took})"
    if status == "interrupted":
        return f" (a run interrupted after {took})"
    if status in ("incomplete", "running"):
        return f" (a run whose measurement stopped after {took}; figures up to then)"
    return ""


def sentence(f: Dict[str, Any], esc: Callable[[str], str] = str, co2: str = "CO2eq", nbsp: str = " ",
             dollar: str = "$") -> str:
    """The statement itself; `esc` and the unit spellings let the LaTeX variant reuse it."""
    def fig(text: str) -> str:
        return esc(text).replace(" ", nbsp, 1) if text[:1].isdigit() else esc(text)

    def usd(x: float) -> str:
        return esc(money(x)).replace(esc("$"), dollar)

    if not f["started"]:
        return (f"The command never started (exit code {f['exit_code']}: "
                f"{'not found' if f['exit_code'] == 127 else 'not executable'}); no energy was used or measured.")
    est = f["estimated"]
    kg = _figure(units.mass, f["kg"], f["kg_range"], f["digits"], est)
    kwh = _figure(units.energy, f["kwh"], f["kwh_range"], f["digits"], est)
    c = f["cost"]
    if c["central"] < units.SMALLEST_USD:
        cost = f"having a social cost of less than {dollar}0.000001"
    else:
        cost = f"having a social cost of {usd(c['central'])} ({usd(c['low'])} to {usd(c['high'])})"
    text = (f"This work{_what_happened(f)} contributed {fig(kg)} of {co2} to the atmosphere and used "
            f"{fig(kwh)} of electricity, {cost}.")
    emb = f.get("embodied")
    if emb and emb.get("kg") is not None:
        text += (f" Its share of the emissions of manufacturing the hardware (embodied carbon, not included "
                 f"above) is an estimated {fig(units.mass(float(emb['kg']), 2))} of {co2}.")
    return text


SOURCES = {"rapl": "RAPL energy counters", "nvml": "NVML energy counters"}
KINDS = {"cpu": "CPU package", "dram": "DRAM", "gpu": "GPU", "ram": "memory", "psys": "platform"}


def _factors(record: Dict[str, Any]) -> str:
    """"; range 0.82x to 1.2x": the estimated components' range as factors of their figure (energy-weighted)."""
    key = "job_j" if record.get("attribution") == "process" else "machine_j"
    est = [c for c in units.counted(record) if c.get("estimated")]
    total = sum(float(c.get(key) or 0) for c in est)
    if total <= 0:
        return ""
    low, high = (sum(float(c.get(k) or 0) for c in est) / total for k in ("low_j", "high_j"))
    return f"; range {units.sig(low, 2)}x to {units.sig(high, 2)}x"


def _hardware(record: Dict[str, Any]) -> str:
    """"measured with RAPL energy counters (CPU package, DRAM) and NVML energy counters (2 x NVIDIA A100)"."""
    measured: Dict[str, List[str]] = {}
    estimated: List[str] = []
    gpus = {str(g.get("index")): str(g.get("name")) for g in (record.get("host") or {}).get("gpus") or []}
    for c in units.counted(record):
        comp = str(c.get("component") or "")
        name = KINDS.get(comp, comp)
        if comp == "gpu":
            name = gpus.get(str(c.get("device")).replace("gpu", ""), "GPU")
        target = estimated if c.get("estimated") else measured.setdefault(str(c.get("source") or "counter"), [])
        target.append(name)

    def listed(names: List[str]) -> str:
        counts = {n: names.count(n) for n in names}
        return ", ".join(f"{k} x {n}" if k > 1 else n for n, k in counts.items())

    parts = [f"{SOURCES.get(src, src)} ({listed(names)})" for src, names in measured.items()]
    out = f"measured with {' and '.join(parts)}" if parts else ""
    if estimated:
        out += ("; " if out else "") + f"estimated from utilisation ({listed(estimated)}{_factors(record)})"
    host = record.get("host") or {}
    cpu = f", CPU {host['cpu_model']}" if host.get("cpu_model") else ""
    return (out or "not measured (no energy meter)") + f" on host {host.get('name', 'unknown')}{cpu}"


def method(f: Dict[str, Any]) -> str:
    """The footnote: hardware and method, PUE, intensity and its source, the social cost's basis."""
    r = f["record"]
    e = r.get("energy") or {}
    share = ("the job's share of the machine by CPU time" if counts_job(r.get("attribution"))
             else "the whole machine")
    parts = [f"Energy {_hardware(r)}; {share}; PUE {units.sig(float(e.get('pue') or 1.0), 3)}."]
    i = f["intensity"]
    g = i.get("g_per_kwh")
    if g is not None:
        where = f" for {f['region']}" if f["region"] else ""
        parts.append(f"Grid carbon intensity {units.intensity(g)} g CO2eq/kWh{where}: {i.get('how') or f['source']}.")
    else:
        parts.append("No grid carbon intensity was recorded.")
    basis = f["cost"].get("basis")
    parts.append(f"Social cost: {EPA}." if is_epa(r) else f"Social cost: {basis or 'user-supplied rates'}.")
    emb = f.get("embodied")
    if emb:
        parts.append(f"Embodied carbon: {emb.get('method', '')}; {emb.get('basis', '')}.")
    parts.append(f"Statement after Henderson et al. (2020); measured with carbonrun {r.get('carbonrun_version', '')}."
                 .replace(" .", "."))
    return " ".join(parts)


def render(record: Dict[str, Any], *, color: bool = False, width: int = 100) -> str:
    f = facts(record)
    text, note = printable(sentence(f)), printable(method(f))  # host and region names are the record's
    if width > 0:
        text, note = textwrap.fill(text, width=max(width, 20)), textwrap.fill(note, width=max(width, 20))
    if color:
        text, note = f"{_BOLD}{text}{_RESET}", f"{_DIM}{note}{_RESET}"
    return f"{text}\n\n{note}\n"
