"""The one-line summary of `--quiet`: everything that matters, nothing that needs rich."""
from __future__ import annotations

from carbonrun.report import units


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    e, em, ci = record["energy"], record["emissions"], record.get("intensity", {})
    where = ci.get("region") or ci.get("source", "?")
    rid = f"run #{record['id']}" if record.get("id") is not None else "run not stored"
    return (f"carbonrun: {record['status']} (exit {record['exit_code']}) in {units.duration(record['duration_s'])}"
            f" · {units.energy(e['total_kwh'])} ({units.measured_label(record)})"
            f" · {units.mass(em['kg'])} CO2eq at {ci.get('g_per_kwh', 0):.0f} g/kWh ({where}) · {rid}")
