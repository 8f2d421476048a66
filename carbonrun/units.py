"""Facts every layer shares, defined once: the energy unit conversion and which joules a run counts."""
from __future__ import annotations

from typing import Any, Mapping, Optional

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
