"""The one-line summary of `--quiet`: everything that matters, nothing that needs rich."""
from __future__ import annotations

from carbonrun.report import units


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    ci = record.get("intensity") or {}
    f = units.figures(record)
    where = ci.get("region") or str(ci.get("source") or "?").replace("-", " ")
    g = ci.get("g_per_kwh")
    at = f" at {units.intensity(g)} g/kWh ({where})" if g is not None else ""
    rid = units.run_label(record, "run kept for `carbonrun sync`", "run not stored")
    return (f"carbonrun: {record.get('status')} (exit {record.get('exit_code')}) in"
            f" {units.duration(record.get('duration_s') or 0)} · {f['mark']}{f['energy_value']}"
            f" ({units.measured_label(record)}) · {f['mark']}{f['emissions_value']} CO2eq{at} · {rid}")
