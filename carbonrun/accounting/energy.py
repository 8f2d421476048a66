"""Accounting per attribution step: machine and job joules per meter, kg CO2eq, a bounded timeline.

Emissions are integrated step by step, kg = sum(E_t x PUE x CI_t), so a grid whose intensity changes
during the run is weighted by when the energy was actually used (Haghshenas et al., 2022).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, FrozenSet, List, Optional, Sequence

from carbonrun.collectors.base import JobView, Meter
from carbonrun.units import J_PER_KWH, counts_job

if TYPE_CHECKING:
    from carbonrun.record import Timeline as TimelineRecord


class Timeline:
    """Average watts per component in buckets whose width doubles when full: bounded memory, best resolution."""

    def __init__(self, components: Sequence[str], max_points: int = 2000) -> None:
        self.max_points = max_points
        self.width = 0.0  # bucket width in seconds; 0 keeps every step until the first merge
        self.t: List[float] = []
        self.j: Dict[str, List[float]] = {c: [] for c in components}
        self.dt: List[float] = []
        self._open_since: Optional[float] = None

    def add(self, t: float, dt: float, joules: Dict[str, float]) -> None:
        if self.dt and self._open_since is not None and t - self._open_since < self.width:
            self.t[-1] = t
            self.dt[-1] += dt
            for c, v in joules.items():
                self.j[c][-1] += v
            return
        if len(self.t) >= self.max_points:
            self._halve()
        self.t.append(t)
        self.dt.append(dt)
        for c in self.j:
            self.j[c].append(joules.get(c, 0.0))
        self._open_since = t - dt

    def _halve(self) -> None:
        """Merge neighbours pairwise; later steps fill buckets twice as wide."""
        self.t = self.t[1::2] + ([self.t[-1]] if len(self.t) % 2 else [])
        self.dt = [sum(self.dt[i:i + 2]) for i in range(0, len(self.dt), 2)]
        for c, v in self.j.items():
            self.j[c] = [sum(v[i:i + 2]) for i in range(0, len(v), 2)]
        self.width = max(self.dt) if self.dt else 0.0

    def to_record(self) -> TimelineRecord:
        watts = {c: [round(e / d, 3) if d > 0 else 0.0 for e, d in zip(v, self.dt)] for c, v in self.j.items()}
        return {"t": [round(x, 3) for x in self.t], "watts": watts}


class Attributor:
    """The job's share of each attribution step, from successive cumulative CPU-time samples."""

    def __init__(self) -> None:
        self._job = self._busy = self._carry = 0.0
        self._pids: FrozenSet[int] = frozenset()
        self._rss = 0

    def view(self, job_cpu_s: float, busy_cpu_s: float, pids: FrozenSet[int], rss_bytes: int) -> JobView:
        """Share = job CPU / machine busy CPU over the step, clipped to 1; CPU time the machine counter
        has not caught up with yet (tick granularity) carries to the next step. A job that just exited
        keeps its last PIDs and RSS for the final step."""
        cpu_s = job_cpu_s - self._job
        d_job = cpu_s + self._carry
        d_busy = busy_cpu_s - self._busy
        self._job, self._busy = job_cpu_s, busy_cpu_s
        share = min(1.0, d_job / d_busy) if d_busy > 0 else (1.0 if d_job > 0 else 0.0)
        self._carry = max(0.0, d_job - share * d_busy) if d_busy > 0 else 0.0
        self._pids = pids or self._pids
        self._rss = rss_bytes or self._rss
        return JobView(share, self._pids, cpu_s, self._rss)


class Accountant:
    """Turns meter readings and the job's share into energy and emissions, one step at a time."""

    def __init__(self, meters: Sequence[Meter], intensity_over: Callable[[float, float], float], pue: float,
                 attribution: str, max_points: int = 2000) -> None:
        self.meters = list(meters)
        self.intensity_over = intensity_over  # g/kWh averaged over [t0, t1] (unix times): Intensity.mean
        self.pue = pue
        self.attribution = attribution
        self._job_counts = counts_job(attribution)
        n = len(self.meters)
        self.machine_j = [0.0] * n
        self.job_j = [0.0] * n
        self._prev = [0.0] * n
        self.kg = self.kg_low = self.kg_high = 0.0
        self.g_weighted = 0.0  # sum(kWh x CI), for the energy-weighted mean intensity
        kinds = [m.component for m in self.meters]  # one power series per device: "gpu 0", "gpu 1"; "cpu" when alone
        self._series = [k if kinds.count(k) == 1 else f"{k} {m.device}" for k, m in zip(kinds, self.meters)]
        self.timeline = Timeline(sorted(set(self._series)), max_points)
        self._t_prev = 0.0

    def baseline(self, readings: Sequence[float]) -> None:
        """The meters' readings when the command starts: energy before that is not the run's."""
        self._prev = list(readings)

    def step(self, t: float, wall: float, readings: Sequence[float], job: JobView) -> None:
        """One attribution step ending at session time t (s) and unix time wall."""
        counted = low = high = 0.0
        by_component: Dict[str, float] = {}
        for i, m in enumerate(self.meters):
            delta = readings[i] - self._prev[i]
            self._prev[i] = readings[i]
            if delta <= 0:
                continue
            share = m.job_share(job)
            job_delta = delta * (job.cpu_share if share is None else share)
            self.machine_j[i] += delta
            self.job_j[i] += job_delta
            by_component[self._series[i]] = by_component.get(self._series[i], 0.0) + delta
            if m.counted:
                e = job_delta if self._job_counts else delta
                counted += e
                low += e * m.low_factor
                high += e * m.high_factor
        dt = t - self._t_prev
        self._t_prev = t
        if dt > 0:
            self.timeline.add(t, dt, by_component)
        if counted > 0:
            kwh = counted * self.pue / J_PER_KWH
            ci = self.intensity_over(wall - max(dt, 0.0), wall)  # the step's mean g/kWh, not its end value
            self.g_weighted += kwh * ci
            self.kg += kwh * ci / 1000
            self.kg_low += low * self.pue / J_PER_KWH * ci / 1000
            self.kg_high += high * self.pue / J_PER_KWH * ci / 1000

    def kwh(self, which: str) -> float:
        """Counted meters' kWh before PUE: the job's ("job") or the whole machine's ("machine")."""
        js = self.job_j if which == "job" else self.machine_j
        return sum(j for j, m in zip(js, self.meters) if m.counted) / J_PER_KWH

    def total_kwh(self) -> float:
        """The run's energy: what the attribution counts, times PUE."""
        return self.kwh("job" if self._job_counts else "machine") * self.pue

    def mean_intensity(self) -> Optional[float]:
        """Energy-weighted mean g/kWh actually applied, or None before any energy."""
        total = self.total_kwh()
        return self.g_weighted / total if total > 0 else None
