"""Wall power of a machine from its CPU and memory, fitted on SPECpower_ssj2008 results.

The coefficients (data/power_model.json) come from scripts/fit_power_model.py, which also writes
their cross-validated error: the range [low, high] at each load level holds the 5th-95th percentile
of measured / predicted for systems the fit never saw. The features must match the script's.

The wall power includes memory. The memory part is the model's own elasticity with respect to
memory size at idle (d log W / d log GB): a machine whose power grows 10 % when its memory grows
by half spends about a fifth of its idle power on memory. That part is split off so that a RAPL
DRAM counter can replace it without counting memory twice.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

MEMORY_SHARE_MAX = 0.4  # the memory part is clipped to [0, 40 %] of idle power: an elasticity is a slope, not a budget


@lru_cache(maxsize=1)
def load() -> Dict[str, Any]:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "power_model.json")
    with open(path) as f:
        model: Dict[str, Any] = json.load(f)
    return model


def normalise(model: str) -> str:
    """'Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz' -> 'intel xeon gold 6148' (as the fit script does)."""
    text = re.sub(r"\((r|tm)\)", " ", model.lower())
    text = re.sub(r"\b(cpu|processor)\b|@.*$|\d+(\.\d+)? ?ghz", " ", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def architecture(model: str) -> str:
    """The CPU family by the fit's rules ('unknown' when none matches: the average offset)."""
    text = normalise(model)
    for pattern, arch in load()["rules"]:
        if re.search(pattern, text):
            return str(arch)
    return "unknown"


def vendor(name: Optional[str]) -> str:
    words = re.findall("[a-z]+", (name or "").lower())
    return load()["vendor_aliases"].get(words[0], words[0]) if words else ""


@dataclass(eq=False)
class Machine:
    """What the model needs; tdp_w per chip, None to take the architecture's median."""

    cpu_model: str
    threads: int
    chips: int
    memory_gb: float
    tdp_w: Optional[float] = None
    vendor: Optional[str] = None


@dataclass(eq=False)
class Curve:
    """Predicted wall watts at each load level, with the calibrated range, for one machine."""

    levels: List[float]
    watts: List[float]
    low: List[float]  # factors of watts
    high: List[float]
    memory_w: float  # the part of the power that is memory (constant, the idle figure)
    arch: str
    tdp_w: float
    tdp_source: str
    matched: List[str] = field(default_factory=list)  # offsets used: cpu model, vendor

    def at(self, load: float) -> Tuple[float, float, float]:
        """(watts, low factor, high factor) at a load in [0, 1], linear between the measured levels."""
        x = min(1.0, max(0.0, load)) * 100.0
        i = min(len(self.levels) - 2, max(0, bisect.bisect_right(self.levels, x) - 1))
        f = (x - self.levels[i]) / (self.levels[i + 1] - self.levels[i])
        return tuple(v[i] + (v[i + 1] - v[i]) * f for v in (self.watts, self.low, self.high))  # type: ignore[return-value]

    def scaled(self, factor: float) -> "Curve":
        """A share of the machine (a VM's threads of its host)."""
        return Curve(self.levels, [w * factor for w in self.watts], self.low, self.high, self.memory_w * factor,
                     self.arch, self.tdp_w, self.tdp_source, self.matched)


def _features(t: float, c: float, d: float, m: float) -> List[float]:
    return [1.0, t, c, d, m, t * t, m * m, d * d, t * d, m * t, c * d]


def _log_watts(model: Dict[str, Any], coefs: List[float], arch: str, x: List[float], level: int) -> float:
    offset = float(model["arch_offsets"].get(arch, [0.0] * len(model["levels"]))[level])
    return sum(a * b for a, b in zip(coefs, x)) + offset


def curve(machine: Machine) -> Curve:
    """The machine's wall-power curve from 0 to 100 % load."""
    model = load()
    arch = architecture(machine.cpu_model)
    dflt = model["arch_defaults"].get(arch, model["arch_defaults"]["unknown"])
    tdp, source = (machine.tdp_w, "given") if machine.tdp_w else (float(dflt["tdp_w"]), f"median of {arch} systems")
    threads, chips, mem = max(1, machine.threads), max(1, machine.chips), max(0.5, machine.memory_gb)
    x = _features(math.log(threads), math.log(chips), math.log(tdp), math.log(mem))
    offsets, matched = [], []
    for table, key, label in (("cpu_model_offsets", normalise(machine.cpu_model), "CPU model"),
                              ("vendor_offsets", vendor(machine.vendor), "vendor")):
        if key and key in model[table]:
            offsets.append(model[table][key])
            matched.append(label)
    logs = []
    for lv, coefs in enumerate(model["coefficients"]):
        logs.append(_log_watts(model, coefs, arch, x, lv) + sum(o[lv] for o in offsets))
    watts = [math.exp(v) for v in logs]
    for i in range(1, len(watts)):  # outside the data (a laptop) the levels' fits can cross: never less at more load
        watts[i] = max(watts[i], watts[i - 1])
    # memory elasticity at idle, by a central difference of the same formula
    h = 0.05
    up = _log_watts(model, model["coefficients"][0], arch,
                    _features(x[1], x[2], x[3], x[4] + h), 0)
    down = _log_watts(model, model["coefficients"][0], arch, _features(x[1], x[2], x[3], x[4] - h), 0)
    share = min(MEMORY_SHARE_MAX, max(0.0, (up - down) / (2 * h)))
    return Curve([float(v) for v in model["levels"]], watts, list(model["range"]["low"]),
                 list(model["range"]["high"]), share * watts[0], arch, tdp, source, matched)


def host_of(cpu_model: str, tdp_w: Optional[float] = None) -> Machine:
    """A typical host for a VM on this CPU: two chips of the architecture's median threads (of recent
    server architectures when the model names none), with its median memory per thread and TDP."""
    model = load()
    arch = architecture(cpu_model)
    dflt = model["arch_defaults"].get(arch if arch != "unknown" else "recent", model["arch_defaults"]["unknown"])
    tdp_w = tdp_w or float(dflt["tdp_w"])
    threads = int(round(2 * dflt["threads_per_chip"]))
    return Machine(cpu_model, threads, 2, threads * float(dflt["memory_gb_per_thread"]), tdp_w)


def vm_curve(cpu_model: str, vcpus: int, tdp_w: Optional[float] = None) -> Tuple[Curve, Machine]:
    """A VM's share of its host: vcpus / host threads of the host's curve."""
    host = host_of(cpu_model, tdp_w)
    power = curve(host).scaled(vcpus / host.threads)
    if not tdp_w:
        recent = power.arch == "unknown"
        power.tdp_source = "median of recent server hosts" if recent else f"median of {power.arch} systems"
    return power, host


def figures() -> Dict[str, float]:
    """The model's cross-validated error, for docs and `estimate`."""
    return dict(load()["cross_validation"])
