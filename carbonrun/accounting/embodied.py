"""Embodied carbon: the job's share of the emissions of making the hardware it ran on.

Method: the Software Carbon Intensity "M" term as Cloud Carbon Footprint (CCF) applies it,
M = TE x (TR / EL) x (RR / TR): a device's manufacturing footprint TE, amortised linearly over its expected
lifetime EL, for the time TR the job held it, times the job's share of the device's resources.

Defaults (overridable: embodied_server_kg, embodied_gpu_kg, embodied_lifetime_years):
- server 1,000 kg CO2eq: CCF's base manufacturing emissions for "a mono socket, low DRAM, no local storage
  commodity rack server" (cloud-carbon-coefficients, ccfcoef/constants.py, from Teads' EC2 dataset);
  bigger machines carry more (CCF adds about 100 kg per extra CPU, DRAM and disks), so it is a floor.
- GPU 150 kg CO2eq per card: CCF's manufacturing emissions per additional GPU card (same file).
- lifetime 4 years: CCF's expected lifespan, after Teads and Dell's PowerEdge R740 life-cycle assessment.

Shares (a decision, see docs/carbon.md): the server by the job's CPU share, job CPU seconds / (duration x
the machine's hardware threads), i.e. the threads it kept busy on average (SCI's resources reserved /
total); the whole server under `--attribution machine`. A GPU counts whole for the run when the job used it
(its share of the GPU's energy when others shared it), and not at all when it did not.

The result is reported beside the operational `emissions`, never added to them: they answer different
questions (what running cost now vs. a share of what building the machine cost) and have different sources.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from carbonrun.units import counts_job

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

SERVER_KG = 1000.0
GPU_KG = 150.0
LIFETIME_YEARS = 4.0
YEAR_S = 365.25 * 86400
METHOD = ("SCI M = TE x (TR/EL) x (RR/TR), as Cloud Carbon Footprint applies it: manufacturing emissions "
          "amortised linearly over the lifetime, for the time used, times the job's share")
SOURCES = [
    "Cloud Carbon Footprint, Embodied Emissions: https://www.cloudcarbonfootprint.org/docs/embodied-emissions",
    "cloud-carbon-coefficients ccfcoef/constants.py: base server 1000 kgCO2eq, GPU card 150 kgCO2eq, "
    "lifespan 4 years",
]


def _setting(st: Any, name: str, default: float) -> float:
    value = getattr(st, "values", {}).get(name) if st is not None else None
    return float(default if value is None else value)


def cpu_share(record: RunRecord) -> Tuple[float, str]:
    """(share of the server, how): CPU-time share, or 1 under machine attribution."""
    if not counts_job(record.get("attribution")):
        return 1.0, "whole machine (attribution machine)"
    threads = int((record.get("host") or {}).get("cpu_threads") or 1)
    duration = float(record.get("duration_s") or 0.0)
    cpu_s = float((record.get("usage") or {}).get("job_cpu_s") or 0.0)
    if duration <= 0:
        return 0.0, "no duration"
    share = min(1.0, cpu_s / (duration * threads))
    return share, (f"job CPU {cpu_s:.2f} s / ({duration:.2f} s x {threads} threads) = {share * 100:.2f}% "
                   "of the server")


def gpu_shares(record: RunRecord) -> Tuple[List[Tuple[str, float, str]], List[str]]:
    """[(device, share, how)] for the GPUs the job used, and notes for those that cannot be told."""
    machine = not counts_job(record.get("attribution"))
    comps = {str(c.get("device")): c for c in record.get("components", []) if c.get("component") == "gpu"}
    out: List[Tuple[str, float, str]] = []
    notes: List[str] = []
    for device, c in comps.items():
        mj, jj = float(c.get("machine_j") or 0.0), float(c.get("job_j") or 0.0)
        if machine:
            out.append((device, 1.0, "whole GPU (attribution machine)"))
        elif jj > 0:
            share = min(1.0, jj / mj) if mj > 0 else 1.0
            out.append((device, share, "used by the job" + (f" ({share * 100:.0f}% of its energy)"
                                                             if share < 0.999 else "")))
    listed = [str(g.get("index")) for g in (record.get("host") or {}).get("gpus", [])]
    unread = [g for g in listed if g not in comps and f"gpu{g}" not in comps]
    if unread and not machine:
        notes.append(f"GPU {', '.join(unread)}: no energy reading, so whether the job used it is unknown; "
                     "left out of the embodied figure")
    elif unread:
        out += [(g, 1.0, "whole GPU (attribution machine)") for g in unread]
    return out, notes


def section(record: RunRecord, st: Any = None) -> Dict[str, Any]:
    """The run record's `embodied` section: {kg, method, basis, per_device, sources, notes}."""
    server_kg = _setting(st, "embodied_server_kg", SERVER_KG)
    gpu_kg = _setting(st, "embodied_gpu_kg", GPU_KG)
    years = _setting(st, "embodied_lifetime_years", LIFETIME_YEARS)
    used_s = float(record.get("duration_s") or 0.0)
    fraction = used_s / (years * YEAR_S)
    share, how = cpu_share(record)
    per_device = [_device("server", (record.get("host") or {}).get("name") or "this machine", server_kg,
                          fraction, share, how)]
    gpus, notes = gpu_shares(record)
    per_device += [_device("gpu", dev, gpu_kg, fraction, s, h) for dev, s, h in gpus]
    return {
        "kg": sum(d["kg"] for d in per_device),
        "method": METHOD,
        "basis": (f"server {server_kg:g} kg CO2eq, GPU {gpu_kg:g} kg CO2eq each, over {years:g} years; "
                  f"{used_s:.2f} s used; server share by CPU time"),
        "per_device": per_device,
        "sources": list(SOURCES),
        "notes": notes,
        "included_in_emissions": False,
    }


def _device(kind: str, device: str, kg_total: float, fraction: float, share: float, how: str) -> Dict[str, Any]:
    return {"kind": kind, "device": device, "embodied_kg": kg_total, "time_fraction": fraction,
            "share": round(share, 6), "share_how": how, "kg": kg_total * fraction * share}
