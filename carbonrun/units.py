"""Facts every layer shares, defined once: the energy unit conversion and which joules a run counts."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

J_PER_KWH = 3.6e6


def kwh(joules: float) -> float:
    return joules / J_PER_KWH


def joules(kwh: float) -> float:
    return kwh * J_PER_KWH


def counts_job(attribution: Optional[str]) -> bool:
    """Under `process` attribution a run counts its job's share of each meter; otherwise the whole machine."""
    return attribution == "process"


def counted_key(attribution: Optional[str]) -> str:
    """The component field a run's totals come from: "job_j" or "machine_j"."""
    return "job_j" if counts_job(attribution) else "machine_j"


def counted_j(component: Mapping[str, Any], attribution: Optional[str]) -> float:
    """The joules of one record component that count towards the run's totals, by the attribution."""
    return float(component.get(counted_key(attribution)) or 0.0)


def counted_components(record: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The components whose joules count towards the run's totals."""
    return [c for c in record.get("components") or [] if c.get("counted", True)]


def energy_bounds(record: Mapping[str, Any]) -> Tuple[float, float, float]:
    """(kWh, low, high) including PUE: each counted component's range, exact ones at their value.

    A listing's summary row has no components: it carries the bounds computed when it was stored."""
    e = record.get("energy") or {}
    total = float(e.get("total_kwh") or 0.0)
    if "components" not in record and e.get("low_kwh") is not None:
        return total, float(e["low_kwh"]), float(e.get("high_kwh", total))
    comps = counted_components(record)
    key = counted_key(record.get("attribution"))
    j = sum(float(c.get(key) or 0.0) for c in comps)
    if not comps or j <= 0:
        return total, total, total
    low = sum(float(c.get("low_j", c.get(key)) or 0.0) for c in comps)
    high = sum(float(c.get("high_j", c.get(key)) or 0.0) for c in comps)
    return total, total * low / j, total * high / j


def measured_label(record: Mapping[str, Any]) -> str:
    """measured, partly estimated, estimated, or unmeasured (no counted component)."""
    if "components" not in record and record.get("measured"):
        return str(record["measured"])  # a summary row: labelled when stored
    comps = counted_components(record)
    if not comps:
        return "unmeasured"
    est = [c.get("estimated") for c in comps]
    return "estimated" if all(est) else ("partly estimated" if any(est) else "measured")
