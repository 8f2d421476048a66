"""Runs as CSV: one row per run, a header, and columns in a fixed order (append-safe across versions).

Energies are kWh; per-component columns hold what the run counts for that kind of device (the job's
share under `process` attribution, the whole machine under `machine`), before PUE.
"""
from __future__ import annotations

import csv
import io
from typing import Dict, Iterable, List, Sequence

from carbonrun.report import units
from carbonrun.units import kwh

COMPONENTS = ("cpu", "dram", "gpu", "ram")
COLUMNS = (
    "id", "uuid", "started_at", "ended_at", "duration_s", "status", "exit_code", "command", "cwd", "tags",
    "attribution", "measured", "total_kwh", "job_kwh", "machine_kwh", "pue",
    *(f"{c}_kwh" for c in COMPONENTS),
    "emissions_kg", "emissions_low_kg", "emissions_high_kg", "intensity_g_per_kwh", "region", "intensity_source",
    "social_cost_usd", "host", "cpu_model", "gpus",
)


def counted_kwh(record: dict) -> Dict[str, float]:
    """kWh per component kind as the run counts it (psys and other uncounted meters aside)."""
    return {kind: kwh(j) for kind, j in units.counted_j_by_kind(record).items()}


def row(record: dict) -> Dict[str, object]:
    e, em = record.get("energy", {}), record.get("emissions", {})
    ci, host = record.get("intensity") or {}, record.get("host") or {}
    comp = counted_kwh(record)
    out: Dict[str, object] = {
        "id": record.get("id"), "uuid": record.get("uuid"), "started_at": record.get("started_at"),
        "ended_at": record.get("ended_at"), "duration_s": record.get("duration_s"), "status": record.get("status"),
        "exit_code": record.get("exit_code"), "command": " ".join(record.get("command", [])),
        "cwd": record.get("cwd"), "tags": ";".join(f"{k}={v}" for k, v in (record.get("tags") or {}).items()),
        "attribution": record.get("attribution"), "measured": units.measured_label(record),
        "total_kwh": e.get("total_kwh"), "job_kwh": e.get("job_kwh"), "machine_kwh": e.get("machine_kwh"),
        "pue": e.get("pue"),
        "emissions_kg": em.get("kg"), "emissions_low_kg": em.get("low_kg"), "emissions_high_kg": em.get("high_kg"),
        "intensity_g_per_kwh": ci.get("g_per_kwh"), "region": ci.get("region"), "intensity_source": ci.get("source"),
        "social_cost_usd": (record.get("social_cost_usd") or {}).get("central"),
        "host": host.get("name"), "cpu_model": host.get("cpu_model"),
        "gpus": ";".join(g.get("name", "") for g in host.get("gpus") or []),
    }
    for c in COMPONENTS:
        out[f"{c}_kwh"] = comp.get(c, 0.0)
    return out


def table(columns: Sequence[str], rows: Iterable[dict]) -> str:
    """CSV text with a header: shared by the csv and codecarbon formats."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    from carbonrun.sanitize import csv_row  # no cell a spreadsheet would run as a formula

    w.writerows(csv_row(r) for r in rows)
    return buf.getvalue()


def render_many(records: List[dict]) -> str:
    return table(COLUMNS, (row(r) for r in records))


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    return render_many([record])
