"""Estimated CPU and memory energy for machines with no readable counter (VMs, containers, CI, laptops).

The power comes from a model fitted on SPECpower_ssj2008 wall-power measurements of real servers
(collectors/power_model.py): a bare-metal machine is the whole machine (wall power: CPU, memory,
board, fans, power supply); a VM is its vCPUs' share of a typical host of its CPU model. The model's
memory part is a meter of its own, so a readable RAPL DRAM counter replaces it instead of adding to it.

Utilisation u = busy CPU seconds / (threads x elapsed) is taken over windows of at least WINDOW_S
(/proc/stat counts in 10 ms ticks: shorter windows would make u jump between 0 and 1), and each
window adds P(u) x its length, P linear between the model's 10 % load levels. The range of each
window's load level, weighted by its energy, gives the meter's low and high factors.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Tuple

from carbonrun.collectors.base import Discovery, JobView, Meter, Probe
from carbonrun.collectors.power_model import Curve, Machine, curve, vm_curve
from carbonrun.collectors.process import BusyClock, total_memory_bytes

WINDOW_S = 0.5

_HYPERVISOR_VENDORS = ("kvm", "qemu", "vmware", "xen", "amazon ec2", "google", "microsoft corporation",
                       "innotek", "virtualbox", "openstack", "bochs", "parallels")


class CpuEstimate(Meter):
    """Everything but memory: the machine's (or the VM's share of its host's) modelled power."""

    component, device, source, estimated = "cpu", "cpu", "estimate", True

    def __init__(self, proc_root: str, threads: int, power: Curve, method: str) -> None:
        super().__init__()
        self.proc, self.threads, self.power, self.method = proc_root, threads, power, method
        self.max_w = (power.watts[-1] - power.memory_w) / threads  # one thread's full-load power
        self.low_factor, self.high_factor = power.at(0.5)[1:]
        self._t0: Optional[float] = None
        self._tw = self._bw = 0.0  # start of the open window: time, busy seconds
        self._t_last = self._b_last = 0.0  # the last read: time, busy seconds
        self._done = self._low_j = self._high_j = 0.0  # closed windows: joules, and their bounds
        self._last = 0.0
        self._shared_upto = 0.0
        self._clock: Optional[BusyClock] = None
        self._owed = 0.0  # job joules the machine estimate has not caught up with (tick granularity)

    def close(self) -> None:
        if self._clock is not None:
            self._clock.close()
            self._clock = None

    def job_share(self, job: JobView) -> Optional[float]:
        """The job's CPU seconds at full per-thread power, as a share of the step's estimated energy.

        Splitting the modelled idle power by who else is busy would make the same job cost more on an
        idle machine than on a busy one; charging its CPU seconds at full-load power does not.
        """
        delta, self._shared_upto = self._last - self._shared_upto, self._last
        owed = self._owed + self.max_w * job.cpu_s
        share = min(1.0, owed / delta) if delta > 0 else 0.0
        self._owed = owed - share * delta
        return share

    def watts(self, load: float) -> Tuple[float, float, float]:
        """(watts without memory, low factor, high factor) at a load in [0, 1]."""
        w, low, high = self.power.at(load)
        return max(0.0, w - self.power.memory_w), low, high

    def position(self) -> Optional[Dict[str, float]]:
        return {"t": self._t_last, "busy": self._b_last} if self._t0 is not None else None

    def reading_at(self, position: Dict[str, float]) -> Optional[float]:
        """The last reading less the modelled energy between that time (monotonic clocks are
        machine-wide) and the last read, at the utilisation of the machine in between."""
        t, busy = float(position["t"]), float(position["busy"])
        dt = self._t_last - t
        if self._t0 is None or t < self._t0 or dt < 0 or busy > self._b_last:
            return None
        p = self.watts((self._b_last - busy) / (self.threads * dt))[0] if dt > 0 else 0.0
        return max(0.0, self._last - p * dt)

    def read(self, now: float) -> float:
        """Joules since the first read (busy time before it is not this run's)."""
        try:
            if self._clock is None:
                self._clock = BusyClock(self.proc)
            busy = self._clock.read()
        except (OSError, ValueError, IndexError):
            return self._last
        if self._t0 is None:
            self._t0 = self._tw = self._t_last = now
            self._bw = self._b_last = busy
            return self._last
        dt = now - self._tw
        if dt <= 0 or busy < self._bw:
            return self._last
        self._t_last, self._b_last = now, busy
        p, low, high = self.watts((busy - self._bw) / (self.threads * dt))
        joules = self._done + p * dt
        if dt >= WINDOW_S:
            self._done = joules
            self._low_j += p * dt * low
            self._high_j += p * dt * high
            self._tw, self._bw = now, busy
            if self._done > 0:
                self.low_factor, self.high_factor = self._low_j / self._done, self._high_j / self._done
        self._last = max(self._last, joules)
        return self._last


class MemoryEstimate(Meter):
    """The model's memory part: constant power, shared by the memory each process holds."""

    component, device, source, estimated = "ram", "ram", "estimate", True

    def __init__(self, gb: float, watts: float, low_factor: float = 1.0, high_factor: float = 1.0) -> None:
        super().__init__()
        self.watts = watts
        self.total_bytes = gb * 1e9
        self.low_factor, self.high_factor = low_factor, high_factor
        self._t0: Optional[float] = None
        self._t_last = 0.0

    def job_share(self, job: JobView) -> Optional[float]:
        """Memory power follows the memory held: the job's resident share of the machine's memory."""
        return min(1.0, job.rss_bytes / self.total_bytes) if self.total_bytes else 0.0

    def read(self, now: float) -> float:
        if self._t0 is None:
            self._t0 = now
        self._t_last = now
        return self.watts * (now - self._t0)

    def position(self) -> Optional[Dict[str, float]]:
        return {"t": self._t_last} if self._t0 is not None else None

    def reading_at(self, position: Dict[str, float]) -> Optional[float]:
        t = float(position["t"])
        return self.watts * (t - self._t0) if self._t0 is not None and self._t0 <= t else None


def _cpuinfo(proc_root: str) -> List[str]:
    """The lines of cpuinfo (empty when unreadable). A run's start asks it several questions (model,
    hypervisor flag, packages) and on a large server it is hundreds of kilobytes: read it once."""
    key = os.path.join(proc_root, "cpuinfo")
    if key not in _CPUINFO:
        try:
            with open(key) as f:
                _CPUINFO[key] = f.read().splitlines()
        except OSError:
            return []
    return _CPUINFO[key]


_CPUINFO: Dict[str, List[str]] = {}


def is_virtualised(proc_root: str = "/proc", sys_root: str = "/sys") -> bool:
    """The CPU's hypervisor flag, or a DMI vendor that names a hypervisor or cloud."""
    if any(line.startswith("flags") and " hypervisor" in line for line in _cpuinfo(proc_root)):
        return True
    for name in ("sys_vendor", "product_name"):
        try:
            with open(f"{sys_root}/class/dmi/id/{name}") as f:
                if any(v in f.read().lower() for v in _HYPERVISOR_VENDORS):
                    return True
        except OSError:
            pass
    return False


def cpu_model(proc_root: str = "/proc") -> str:
    for line in _cpuinfo(proc_root):
        if line.startswith("model name") or line.startswith("Model"):
            return line.split(":", 1)[1].strip()
    return "unknown"


_NON_WORD = bytes(c if chr(c).isascii() and chr(c).isalnum() else 32 for c in range(256))


def _words(text: str) -> str:
    """Lower-case ASCII letters and digits, every other run of characters one space, padded with spaces."""
    return " " + " ".join(text.lower().encode("ascii", "replace").translate(_NON_WORD).decode().split()) + " "


def lookup_tdp(model: str) -> Optional[Tuple[str, float]]:
    """The longest TDP-table model name that appears as a word sequence in the CPU's model string.

    Runs on every start, over some 4,900 names, so the normalisation is bytes.translate, not a regex."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "cpu_tdp.csv")
    text = _words(model)
    best = None
    try:
        with open(path, newline="") as f:
            rows = csv.reader(f)
            next(rows, None)  # the header
            for name, tdp in rows:
                key = _words(name)
                if key != "  " and key in text and (best is None or len(name) > len(best[0])):
                    best = (name, float(tdp))
    except (OSError, ValueError):
        return None
    return best


def chips(proc_root: str = "/proc") -> int:
    """CPU packages: distinct `physical id`s in cpuinfo (1 when it does not say)."""
    ids = {line.split(":", 1)[1].strip() for line in _cpuinfo(proc_root) if line.startswith("physical id")}
    return max(1, len(ids))


def dmi_vendor(sys_root: str = "/sys") -> Optional[str]:
    try:
        with open(f"{sys_root}/class/dmi/id/sys_vendor") as f:
            return f.read().strip() or None
    except OSError:
        return None


def this_machine(probe: Probe) -> Tuple[Machine, bool, Optional[str]]:
    """(what the model needs about this machine, whether it is a VM, the TDP table's matching name)."""
    model = cpu_model(probe.proc_root)
    virtual = is_virtualised(probe.proc_root, probe.sys_root)
    tdp = lookup_tdp(model)
    mem = total_memory_bytes(probe.proc_root) or 0
    machine = Machine(model, os.cpu_count() or 1, chips(probe.proc_root), mem / 1e9, tdp[1] if tdp else None,
                      None if virtual else dmi_vendor(probe.sys_root))
    return machine, virtual, tdp[0] if tdp else None


def model_for(machine: Machine, virtual: bool) -> Tuple[Curve, str]:
    """The power curve for this machine (or VM) and one line saying how it was made."""
    if virtual:
        power, host = vm_curve(machine.cpu_model, machine.threads, machine.tdp_w)
        tdp = f"TDP {power.tdp_w:.0f} W" + ("" if machine.tdp_w else ", the median of such hosts")
        how = (f"virtual machine: {machine.threads} of the {host.threads} threads of a typical 2-chip "
               f"{power.arch} host ({tdp})")
    else:
        power = curve(machine)
        tdp = f"TDP {power.tdp_w:.0f} W" + ("" if machine.tdp_w else f", {power.tdp_source}")
        how = (f"whole machine: {machine.chips} x {machine.cpu_model} ({power.arch}, {tdp}), "
               f"{machine.threads} threads, {machine.memory_gb:.0f} GB")
    used = f", {' and '.join(power.matched)} offset" if power.matched else ""
    outside = (f"; outside the model's data ({'; '.join(power.outside)}): range widened x{power.widened:.1f}"
               if power.outside else "")
    return power, f"{how}; SPECpower_ssj2008 model{used}{outside}"


def discover(probe: Probe) -> Discovery:
    """CPU and memory estimates, with the method written down for the record."""
    machine, virtual, _ = this_machine(probe)
    power, how = model_for(machine, virtual)
    cpu = CpuEstimate(probe.proc_root, machine.threads, power, how)
    meters: List[Meter] = [cpu]
    methods = [how]
    if machine.memory_gb > 0 and power.memory_w > 0:
        low, high = power.low[0], power.high[0]
        meters.append(MemoryEstimate(machine.memory_gb, power.memory_w, low, high))
        methods.append(f"memory: {power.memory_w:.1f} W, the model's memory part")
    w0, w100 = power.watts[0], power.watts[-1]
    note = (f"estimated energy (no readable hardware counter): {'; '.join(methods)}; {w0:.0f} W idle to "
            f"{w100:.0f} W at full load, range {power.low[0]:.2f}x-{power.high[0]:.2f}x idle, "
            f"{power.low[-1]:.2f}x-{power.high[-1]:.2f}x full (5th-95th percentile of measured / predicted "
            "on servers the fit never saw)")
    cpu.notes.append(note)
    return Discovery(meters=meters, notes=[],
                     details=[{"kind": "estimate", "method": "; ".join(methods), "virtualised": virtual}])
