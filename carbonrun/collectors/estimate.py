"""Estimated CPU and memory energy for machines with no readable counter (VMs, containers, CI).

With utilisation u = busy CPU seconds / (threads x elapsed), power is linear in u, so the energy
integral is exact in the busy-time counter whatever the sampling rate:
    E(t) = threads x P_idle x t + (P_max - P_idle) x busy_cpu_s(t)
"""
from __future__ import annotations

import csv
import os
import re
from typing import Optional, Tuple

from carbonrun.collectors.base import Discovery, JobView, Meter, Probe
from carbonrun.collectors.process import BusyClock, total_memory_bytes

# Cloud Carbon Footprint's AWS averages, per vCPU (shared/data/README.md).
VCPU_IDLE_W = 0.74
VCPU_MAX_W = 3.5
MEMORY_W_PER_GB = 0.375
# Estimates are coefficients averaged over hardware; the range says how far off they may be.
LOW, HIGH = 0.5, 1.5

_HYPERVISOR_VENDORS = ("kvm", "qemu", "vmware", "xen", "amazon ec2", "google", "microsoft corporation",
                       "innotek", "virtualbox", "openstack", "bochs", "parallels")


class CpuEstimate(Meter):
    component, device, source, estimated = "cpu", "cpu", "estimate", True
    low_factor, high_factor = LOW, HIGH

    def __init__(self, proc_root: str, threads: int, idle_w: float, max_w: float, method: str) -> None:
        super().__init__()
        self.proc, self.threads, self.idle_w, self.max_w = proc_root, threads, idle_w, max_w
        self.method = method
        self._busy0 = 0.0
        self._t0: Optional[float] = None
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

    def read(self, now: float) -> float:
        """Joules since the first read (busy time before it is not this run's)."""
        try:
            if self._clock is None:
                self._clock = BusyClock(self.proc)
            busy_now = self._clock.read()
        except (OSError, ValueError, IndexError):
            return self._last
        if self._t0 is None:
            self._t0, self._busy0 = now, busy_now
        busy = busy_now - self._busy0
        if busy < 0:
            return self._last
        joules = self.threads * self.idle_w * (now - self._t0) + (self.max_w - self.idle_w) * busy
        self._last = max(self._last, joules)
        return self._last


class MemoryEstimate(Meter):
    component, device, source, estimated = "ram", "ram", "estimate", True
    low_factor, high_factor = LOW, HIGH

    def __init__(self, gb: float) -> None:
        super().__init__()
        self.watts = gb * MEMORY_W_PER_GB
        self.total_bytes = gb * 1e9
        self._t0: Optional[float] = None

    def job_share(self, job: JobView) -> Optional[float]:
        """Memory power follows the memory held: the job's resident share of the machine's memory."""
        return min(1.0, job.rss_bytes / self.total_bytes) if self.total_bytes else 0.0

    def read(self, now: float) -> float:
        if self._t0 is None:
            self._t0 = now
        return self.watts * (now - self._t0)


def is_virtualised(proc_root: str = "/proc", sys_root: str = "/sys") -> bool:
    """The CPU's hypervisor flag, or a DMI vendor that names a hypervisor or cloud."""
    try:
        with open(f"{proc_root}/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and " hypervisor" in line:
                    return True
    except OSError:
        pass
    for name in ("sys_vendor", "product_name"):
        try:
            with open(f"{sys_root}/class/dmi/id/{name}") as f:
                if any(v in f.read().lower() for v in _HYPERVISOR_VENDORS):
                    return True
        except OSError:
            pass
    return False


def cpu_model(proc_root: str = "/proc") -> str:
    try:
        with open(f"{proc_root}/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def lookup_tdp(model: str) -> Optional[Tuple[str, float]]:
    """The longest TDP-table model name that appears as a word sequence in the CPU's model string."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "cpu_tdp.csv")
    try:
        with open(path, newline="") as f:
            rows = [(r["model"], float(r["tdp_w"])) for r in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return None
    text = " " + re.sub(r"[^a-z0-9]+", " ", model.lower()) + " "
    best = None
    for name, tdp in rows:
        key = " " + re.sub(r"[^a-z0-9]+", " ", name.lower()).strip() + " "
        if key.strip() and key in text and (best is None or len(name) > len(best[0])):
            best = (name, tdp)
    return best


def discover(probe: Probe) -> Discovery:
    """CPU and memory estimates, with the method written down for the record."""
    threads = os.cpu_count() or 1
    model = cpu_model(probe.proc_root)
    virtual = is_virtualised(probe.proc_root, probe.sys_root)
    tdp = None if virtual else lookup_tdp(model)
    if tdp:
        per_thread = tdp[1] / threads
        cpu = CpuEstimate(probe.proc_root, threads, 0.0, per_thread,
                          f"CPU: TDP of {tdp[0]} ({tdp[1]:.0f} W, CodeCarbon's table) x utilisation")
    else:
        why = "virtual machine" if virtual else f"CPU model {model!r} not in the TDP table"
        cpu = CpuEstimate(probe.proc_root, threads, VCPU_IDLE_W, VCPU_MAX_W,
                          f"CPU ({why}): {threads} vCPU x ({VCPU_IDLE_W} W idle + {VCPU_MAX_W - VCPU_IDLE_W:.2f} W"
                          " x utilisation), Cloud Carbon Footprint's AWS averages")
    meters = [cpu]
    methods = [cpu.method]
    mem = total_memory_bytes(probe.proc_root)
    if mem:
        gb = mem / 1e9
        meters.append(MemoryEstimate(gb))
        methods.append(f"memory: {gb:.1f} GB x {MEMORY_W_PER_GB} W/GB")
    note = ("estimated energy (no readable hardware counter): " + "; ".join(methods)
            + f"; range {LOW:g}x to {HIGH:g}x")
    cpu.notes.append(note)
    return Discovery(meters=meters, notes=[],
                     details=[{"kind": "estimate", "method": "; ".join(methods), "virtualised": virtual}])
