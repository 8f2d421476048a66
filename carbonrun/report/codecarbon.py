"""Runs as rows of CodeCarbon's `emissions.csv`, for dashboards and scripts that read that file.

The columns are those of the file CodeCarbon 2.x writes (its docs' "Data Fields Logged for Each
Experiment", plus codecarbon_version and pue which the file carries), in the file's order. Units are
CodeCarbon's: seconds, kg CO2eq, kg/s, W (mean power), kWh, GB. The component energies include PUE,
so energy_consumed = cpu_energy + gpu_energy + ram_energy, as CodeCarbon documents. carbonrun's DRAM
counts as RAM; psys (the whole platform) is not a component there and is left out.
"""
from __future__ import annotations

from datetime import datetime
from typing import Dict, List, Optional, Tuple

from carbonrun.units import kwh
from carbonrun.intensity import regions
from carbonrun.report.csvfmt import table
from carbonrun.report.units import counted_j_by_kind

COLUMNS = (
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region",
    "os", "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model",
    "longitude", "latitude", "ram_total_size", "tracking_mode", "on_cloud", "pue",
)
_KIND = {"cpu": "cpu", "gpu": "gpu", "dram": "ram", "ram": "ram"}


def _joules(record: dict) -> Dict[str, float]:
    """Counted joules per CodeCarbon component (cpu, gpu, ram), before PUE."""
    out = {"cpu": 0.0, "gpu": 0.0, "ram": 0.0}
    for component, j in counted_j_by_kind(record).items():
        if component in _KIND:
            out[_KIND[component]] += j
    return out


def _place(region: Optional[str]) -> Tuple[str, str, str, str]:
    """(country_name, country_iso_code alpha-3, cloud_provider, cloud_region) from the record's region."""
    if not region:
        return "", "", "", ""
    if ":" in region:
        provider, _, name = region.partition(":")
        return "", "", provider, name
    try:
        r = regions.lookup(region)
        return r.name, regions.alpha3(r.key), "", ""
    except (LookupError, OSError, ValueError):
        return "", "", "", ""


def _timestamp(record: dict) -> str:
    """CodeCarbon's `%Y-%m-%dT%H:%M:%S` (local time, no offset), at the end of the run."""
    when = record.get("ended_at") or record.get("started_at") or ""
    try:
        return datetime.fromisoformat(when).strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return when[:19]


def row(record: dict) -> Dict[str, object]:
    host, ci = record.get("host") or {}, record.get("intensity") or {}
    duration = float(record.get("duration_s") or 0.0)
    pue = float(record.get("energy", {}).get("pue") or 1.0)
    kg = float(record.get("emissions", {}).get("kg") or 0.0)
    j = _joules(record)
    country, iso3, provider, cloud_region = _place(ci.get("region"))
    gpus = host.get("gpus") or []
    names = sorted({g.get("name", "") for g in gpus})
    return {
        "timestamp": _timestamp(record),
        "project_name": (record.get("tags") or {}).get("project", "carbonrun"),
        "run_id": record.get("uuid"),
        "duration": duration,
        "emissions": kg,
        "emissions_rate": kg / duration if duration > 0 else 0.0,
        **{f"{k}_power": (j[k] / duration if duration > 0 else 0.0) for k in ("cpu", "gpu", "ram")},
        **{f"{k}_energy": kwh(j[k] * pue) for k in ("cpu", "gpu", "ram")},
        "energy_consumed": kwh(sum(j.values()) * pue),
        "country_name": country, "country_iso_code": iso3, "region": "",
        "cloud_provider": provider, "cloud_region": cloud_region,
        "os": host.get("platform", ""), "python_version": "", "codecarbon_version": "",
        "cpu_count": host.get("cpu_threads", ""), "cpu_model": host.get("cpu_model", ""),
        "gpu_count": len(gpus), "gpu_model": " ".join(f"{sum(g.get('name') == n for g in gpus)} x {n}" for n in names),
        "longitude": "", "latitude": "", "ram_total_size": host.get("memory_gb", ""),
        "tracking_mode": record.get("attribution", "process"),
        "on_cloud": "Y" if provider else "N",
        "pue": pue,
    }


def render_many(records: List[dict]) -> str:
    return table(COLUMNS, (row(r) for r in records))


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    return render_many([record])
