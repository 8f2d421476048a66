"""Wall power of a machine from its CPU and memory, fitted on SPECpower_ssj2008 results.

The coefficients (data/power_model.json) come from scripts/fit_power_model.py, which also writes
their cross-validated error: the range [low, high] at each load level holds the 5th-95th percentile
of measured / predicted for systems the fit never saw. The features must match the script's.

The wall power includes memory. The memory part is the model's own elasticity with respect to
memory size at idle (d log W / d log GB): a machine whose power grows 10 % when its memory grows
by half spends about a fifth of its idle power on memory. That part is split off so that a RAPL
DRAM counter can replace it without counting memory twice.

Outside its data a quadratic in logs can bend anywhere (a 10 W laptop chip read flat, an 8-thread
EPYC inverted), so each input is clamped to the range the fit saw, and the curve is made
non-decreasing with a load part (full - idle) at least that of the flattest measured server. Either
step flags the estimate as outside the model's data and widens its range by the distance clamped, as
if power were proportional to the input (a TDP of 10 W clamped to 25 W: x2.5), and by at least
OUTSIDE_FACTOR, since the calibrated range only holds for machines like the measured ones.
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
OUTSIDE_FACTOR = 1.5  # the least an estimate outside the model's data has its range widened by
_INPUTS = (("threads", "threads", ""), ("chips", "chips", ""), ("tdp_w", "TDP", " W per chip"),
           ("memory_gb", "memory", " GB"))


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
    outside: List[str] = field(default_factory=list)  # why the estimate is outside the model's data
    widened: float = 1.0  # the factor low and high were widened by for it

    def at(self, load: float) -> Tuple[float, float, float]:
        """(watts, low factor, high factor) at a load in [0, 1], linear between the measured levels."""
        x = min(1.0, max(0.0, load)) * 100.0
        i = min(len(self.levels) - 2, max(0, bisect.bisect_right(self.levels, x) - 1))
        f = (x - self.levels[i]) / (self.levels[i + 1] - self.levels[i])
        return tuple(v[i] + (v[i + 1] - v[i]) * f for v in (self.watts, self.low, self.high))  # type: ignore[return-value]

    def scaled(self, factor: float) -> "Curve":
        """A share of the machine (a VM's threads of its host)."""
        return Curve(self.levels, [w * factor for w in self.watts], self.low, self.high, self.memory_w * factor,
                     self.arch, self.tdp_w, self.tdp_source, self.matched, self.outside, self.widened)


def _features(t: float, c: float, d: float, m: float) -> List[float]:
    return [1.0, t, c, d, m, t * t, m * m, d * d, t * d, m * t, c * d]


def _log_watts(model: Dict[str, Any], coefs: List[float], arch: str, x: List[float], level: int) -> float:
    offset = float(model["arch_offsets"].get(arch, [0.0] * len(model["levels"]))[level])
    return sum(a * b for a, b in zip(coefs, x)) + offset


def _clamp(model: Dict[str, Any], given: Dict[str, float]) -> Tuple[Dict[str, float], List[str], float]:
    """Each input within the fitted data's range: (clamped inputs, what was clamped, sum of |log distance|)."""
    bounds = model["input_ranges"]
    out, notes, distance = {}, [], 0.0
    for key, label, unit in _INPUTS:
        lo, hi = (float(v) for v in bounds[key])
        value = given[key]
        out[key] = min(hi, max(lo, value))
        if out[key] != value:
            side = "below the data's smallest" if value < lo else "above the data's largest"
            notes.append(f"{label} {value:g}{unit} {side}, {out[key]:g}{unit} used")
            distance += abs(math.log(value / out[key]))
    return out, notes, distance


def _shape(watts: List[float], levels: List[float], floor: float) -> Tuple[List[float], bool]:
    """Non-decreasing in load, with a load part of at least floor x idle (linear in load); whether the
    floor had to raise it."""
    out = list(watts)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1])
    shaped = [out[0] + max(w - out[0], floor * out[0] * lv / 100) for w, lv in zip(out, levels)]
    return shaped, any(s > w * (1 + 1e-9) for s, w in zip(shaped, out))


def curve(machine: Machine) -> Curve:
    """The machine's wall-power curve from 0 to 100 % load."""
    model = load()
    arch = architecture(machine.cpu_model)
    dflt = model["arch_defaults"].get(arch, model["arch_defaults"]["unknown"])
    tdp, source = (machine.tdp_w, "given") if machine.tdp_w else (float(dflt["tdp_w"]), f"median of {arch} systems")
    given = {"threads": float(max(1, machine.threads)), "chips": float(max(1, machine.chips)), "tdp_w": tdp,
             "memory_gb": max(0.5, machine.memory_gb)}
    used, outside, distance = _clamp(model, given)
    x = _features(*(math.log(used[key]) for key, _, _ in _INPUTS))
    offsets, matched = [], []
    for table, key, label in (("cpu_model_offsets", normalise(machine.cpu_model), "CPU model"),
                              ("vendor_offsets", vendor(machine.vendor), "vendor")):
        if key and key in model[table]:
            offsets.append(model[table][key])
            matched.append(label)
    logs = []
    for lv, coefs in enumerate(model["coefficients"]):
        logs.append(_log_watts(model, coefs, arch, x, lv) + sum(o[lv] for o in offsets))
    levels = [float(v) for v in model["levels"]]
    floor = float(model["dynamic_floor"]["full_over_idle_minus_1"])
    watts, raised = _shape([math.exp(v) for v in logs], levels, floor)
    if raised:
        outside.append(f"the fitted levels give a flatter curve than any measured server's: load part raised to "
                       f"{floor:.0%} of idle")
    widened = max(OUTSIDE_FACTOR, math.exp(distance)) if outside else 1.0
    # memory elasticity at idle, by a central difference of the same formula
    h = 0.05
    up = _log_watts(model, model["coefficients"][0], arch,
                    _features(x[1], x[2], x[3], x[4] + h), 0)
    down = _log_watts(model, model["coefficients"][0], arch, _features(x[1], x[2], x[3], x[4] - h), 0)
    share = min(MEMORY_SHARE_MAX, max(0.0, (up - down) / (2 * h)))
    return Curve(levels, watts, [v / widened for v in model["range"]["low"]],
                 [v * widened for v in model["range"]["high"]], share * watts[0], arch, tdp, source, matched,
                 outside, widened)


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
