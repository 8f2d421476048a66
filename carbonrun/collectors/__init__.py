"""Energy sources. Each module has `discover(probe) -> Discovery`; this picks and merges them."""
from __future__ import annotations

from carbonrun.collectors.base import Discovery, JobView, Meter, Probe

__all__ = ["Discovery", "JobView", "Meter", "Probe", "open_meters"]


def _merge(into: Discovery, found: Discovery) -> None:
    into.meters += found.meters
    into.notes += found.notes
    into.gpus += found.gpus
    into.details += found.details


def open_meters(probe: Probe) -> Discovery:
    """RAPL when readable, else the estimate; NVML GPUs unless `--gpus none`."""
    from carbonrun.collectors import estimate, rapl

    found = Discovery()
    _merge(found, rapl.discover(probe))
    if not any(m.component == "cpu" for m in found.meters):
        _merge(found, estimate.discover(probe))
    elif not any(m.component == "dram" for m in found.meters):
        est = estimate.discover(probe)
        for m in est.meters:
            if m.component == "ram":
                m.notes.append("memory estimated (no RAPL dram zone): " + est.details[0]["method"].split("; ")[-1])
                found.meters.append(m)
    if probe.gpus != "none":
        from carbonrun.collectors import nvml

        _merge(found, nvml.discover(probe))
    return found
