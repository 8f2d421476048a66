"""Energy sources. Each module has `discover(probe) -> Discovery`; this picks and merges them."""
from __future__ import annotations

from typing import List, Set

from carbonrun.collectors.base import Discovery, JobView, Meter, Probe
from carbonrun.collectors import estimate, rapl

__all__ = ["Discovery", "JobView", "Meter", "Probe", "estimated_components", "open_meters"]


def _merge(into: Discovery, found: Discovery) -> None:
    into.meters += found.meters
    into.notes += found.notes
    into.gpus += found.gpus
    into.details += found.details
    if found.max_interval is not None:
        into.max_interval = min(found.max_interval, into.max_interval or found.max_interval)


def estimated_components(measured: Set[str]) -> List[str]:
    """What the estimate must cover given the components RAPL measures: cpu unless a package is read,
    ram (the model's memory part) unless a dram zone is read."""
    return [c for c, counter in (("cpu", "cpu"), ("ram", "dram")) if counter not in measured]


def open_meters(probe: Probe) -> Discovery:
    """RAPL when readable, else the estimate; NVML GPUs unless `--gpus none`."""
    found = Discovery()
    _merge(found, rapl.discover(probe))
    need = estimated_components({m.component for m in found.meters if m.counted})
    if need:
        est = estimate.discover(probe)
        for m in est.meters:
            if m.component not in need:  # a readable counter replaces the estimate: never both
                m.close()
                continue
            if "cpu" not in need:
                method = est.details[0]["method"].split("; ")[-1]
                m.notes.append(f"memory estimated (no readable RAPL dram zone): {method}")
            found.meters.append(m)
        if "cpu" in need:
            found.notes += est.notes
            found.details += est.details
            if "ram" not in need:
                found.notes.append("memory measured by the RAPL dram counter; "
                                   "the estimate covers the rest of the machine")
    if probe.gpus != "none":
        from carbonrun.collectors import nvml  # not with --gpus none

        _merge(found, nvml.discover(probe))
    return found
