"""Carbon-aware start times: when, within a window, a job of known length would emit least.

The decision and its forecast: nothing here prints, sleeps on its own or reads the clock (callers pass
`now`, and wait_until takes the clock and the sleeper), so every part runs in tests without waiting.

Model: the grid intensity is a step function given as segments (t_from, t_to, g CO2eq/kWh). For a job of
constant power P and duration d started at s, emissions = P x integral of CI over [s, s+d]. That integral is
piecewise linear in s, with kinks only where s or s+d crosses a segment boundary, so its minimum over the
allowed starts [now, now+window] lies at one of: now, now+window, a boundary b, or b-d. best_start evaluates
exactly those candidates with prefix sums (exact, no sampling grid).

Gaps: time without forecast data is unknown, and is never filled in. A candidate whose [s, s+d] is not wholly
covered is skipped; a forecast that ends inside the window limits the latest start (said in a note); when no
candidate is covered, the plan starts at once and says why. Filling gaps with the last value would invent a
forecast and could pick a start for the sake of an invented hour.
"""
from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from carbonrun import paths
from carbonrun.errors import CarbonrunError
from carbonrun.intensity import providers
from carbonrun.intensity.chain import provider_options
from carbonrun.intensity.carbon import IntensityFileError, load_intensity_file, provider_defaults
from carbonrun.settings import Settings
from carbonrun.timefmt import format_duration, iso

Segment = Tuple[float, float, float]
MAX_RECORD_POINTS = 288  # a day of 5-minute points; longer forecasts are merged for the record
_EPS = 1e-6  # seconds: boundaries closer than this touch
_SKEW_S = 1.0  # "now" read a moment after the forecast was cut to the window: not a shorter forecast


# -- series ----------------------------------------------------------------------------------------------
def to_segments(points: Sequence[Sequence[float]], step_s: Optional[float] = None) -> List[Segment]:
    """Sorted, non-overlapping segments from provider segments (t_from, t_to, g) or points (t, g).

    A point holds until the next one, the last for step_s (default: the median spacing). A spacing longer
    than twice step_s is a hole in the data: the point holds for step_s and the rest is a gap.
    """
    items = sorted(tuple(float(x) for x in p) for p in points)
    if not items:
        return []
    if len(items[0]) == 2:
        spacings = sorted(b[0] - a[0] for a, b in zip(items, items[1:]) if b[0] > a[0])
        step = step_s or (spacings[len(spacings) // 2] if spacings else 3600.0)
        segs = []
        for i, (t, g) in enumerate(items):
            nxt = items[i + 1][0] if i + 1 < len(items) else t + step
            segs.append((t, nxt if nxt - t <= 2 * step else t + step, g))
    else:
        segs = [(a, b, g) for a, b, g in items]
    out: List[Segment] = []
    for i, (a, b, g) in enumerate(segs):
        if i + 1 < len(segs):
            b = min(b, segs[i + 1][0])  # overlaps: the later segment wins from its start
        if b > a:
            out.append((a, b, g))
    return out


class _Integral:
    """Prefix sums over segments: the integral of CI over any [x, y] in O(log n), and coverage runs."""

    def __init__(self, segs: List[Segment]) -> None:
        self.segs = segs
        self.starts = [s[0] for s in segs]
        self.cum = [0.0]
        for a, b, g in segs:
            self.cum.append(self.cum[-1] + g * (b - a))
        self.runs: List[Tuple[float, float]] = []
        for a, b, _ in segs:
            if self.runs and a - self.runs[-1][1] <= _EPS:
                self.runs[-1] = (self.runs[-1][0], max(self.runs[-1][1], b))
            else:
                self.runs.append((a, b))

    def upto(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return 0.0
        a, b, g = self.segs[i]
        return self.cum[i] + g * (min(t, b) - a)

    def mean(self, x: float, y: float) -> float:
        return (self.upto(y) - self.upto(x)) / (y - x)

    def covers(self, x: float, y: float) -> bool:
        return any(a - _EPS <= x and y <= b + _EPS for a, b in self.runs)

    def value_at(self, t: float) -> Optional[float]:
        i = bisect.bisect_right(self.starts, t) - 1
        return self.segs[i][2] if i >= 0 and t < self.segs[i][1] else None


# -- the decision ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    """When to start, and what the forecast says that saves against starting now."""

    decided_at: float
    start_at: float
    window_s: float
    expected_duration_s: float
    forecast_g_per_kwh: Optional[float] = None  # mean over [start_at, start_at + duration]
    now_g_per_kwh: Optional[float] = None  # mean over [now, now + duration]: starting at once
    saving_pct: Optional[float] = None
    source: Optional[str] = None
    points: List[Segment] = field(default_factory=list)
    candidates: int = 0
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def wait_s(self) -> float:
        return max(0.0, self.start_at - self.decided_at)

    @property
    def has_forecast(self) -> bool:
        return self.forecast_g_per_kwh is not None

    def to_record(self) -> Dict[str, Any]:
        """The run record's `plan` section (the forecast points bounded to MAX_RECORD_POINTS)."""
        pts = bounded(self.points)
        rec: Dict[str, Any] = {
            "decided_at": iso(self.decided_at), "start_at": iso(self.start_at), "window_s": self.window_s,
            "expected_duration_s": round(self.expected_duration_s, 3),
            "forecast_g_per_kwh": _round(self.forecast_g_per_kwh), "now_g_per_kwh": _round(self.now_g_per_kwh),
            "saving_pct": _round(self.saving_pct, 1), "source": self.source, "candidates": self.candidates,
            "forecast_points": {"count": len(self.points), "merged": len(pts) < len(self.points),
                                "segments": [[round(a), round(b), round(g, 2)] for a, b, g in pts]},
            "notes": list(self.notes),
        }
        rec.update(self.extra)
        return rec


def best_start(points: Sequence[Sequence[float]], now: float, window_s: float, duration_s: float,
               step_s: Optional[float] = None, source: Optional[str] = None) -> Plan:
    """The start in [now, now+window_s] whose [s, s+duration_s] has the lowest mean forecast intensity.

    Ties go to the earliest start (no waiting for nothing). Raises ValueError for a window or duration
    that is not more than zero.
    """
    if not (window_s > 0 and duration_s > 0 and math.isfinite(window_s) and math.isfinite(duration_s)):
        raise ValueError("the window and the expected duration must be more than zero")
    segs = to_segments(points, step_s)
    plan = Plan(now, now, window_s, duration_s, source=source)
    last = now + window_s
    plan.points = [s for s in segs if s[1] > now and s[0] < last + duration_s]
    if not plan.points:
        plan.notes.append("no forecast covers the window: starting at once")
        return plan
    integ = _Integral(segs)
    bounds = {x for a, b, _ in segs for x in (a, b)}
    cands = sorted({now, last} | {c for b in bounds for c in (b, b - duration_s) if now <= c <= last})
    usable = [s for s in cands if integ.covers(s, s + duration_s)]
    plan.candidates = len(usable)
    if not usable:
        plan.notes.append(_uncovered_note(integ, now, last, duration_s))
        return plan
    best, best_g = usable[0], integ.mean(usable[0], usable[0] + duration_s)
    for s in usable[1:]:
        g = integ.mean(s, s + duration_s)
        if g < best_g - 1e-9 * max(1.0, abs(best_g)):
            best, best_g = s, g
    plan.start_at, plan.forecast_g_per_kwh = best, best_g
    _compare_with_now(plan, integ)
    end = max(b for _, b in integ.runs)
    if end - duration_s < last - _SKEW_S:
        plan.notes.append(f"the forecast ends at {iso(end)}: starts after {iso(max(now, end - duration_s))} "
                          "could not be judged")
    if len(integ.runs) > 1 and any(now < a < last + duration_s for a, _ in integ.runs[1:]):
        plan.notes.append("the forecast has gaps: start times whose run would cross a gap were skipped")
    return plan


def _compare_with_now(plan: Plan, integ: _Integral) -> None:
    now, d = plan.decided_at, plan.expected_duration_s
    if integ.covers(now, now + d):
        plan.now_g_per_kwh = integ.mean(now, now + d)
    else:
        plan.now_g_per_kwh = integ.value_at(now)
        plan.notes.append("the forecast does not cover a run starting now"
                          + ("; compared with the current value" if plan.now_g_per_kwh is not None else ""))
    if plan.now_g_per_kwh and plan.forecast_g_per_kwh is not None:
        plan.saving_pct = (plan.now_g_per_kwh - plan.forecast_g_per_kwh) / plan.now_g_per_kwh * 100.0


def _uncovered_note(integ: _Integral, now: float, last: float, d: float) -> str:
    longest = max(min(b, last + d) - max(a, now) for a, b in integ.runs)
    return (f"the forecast covers at most {format_duration(max(longest, 0))} without a gap, less than the "
            f"expected {format_duration(d)} run: starting at once")


def bounded(segs: List[Segment], limit: int = MAX_RECORD_POINTS) -> List[Segment]:
    """At most `limit` segments: neighbours merged by their time-weighted mean when there are more."""
    if len(segs) <= limit:
        return list(segs)
    k = math.ceil(len(segs) / limit)
    out = []
    for i in range(0, len(segs), k):
        group = segs[i:i + k]
        span = sum(b - a for a, b, _ in group)
        out.append((group[0][0], group[-1][1], sum(g * (b - a) for a, b, g in group) / span))
    return out


# -- the forecast ----------------------------------------------------------------------------------------
HISTORY_RUNS = 20  # earlier runs of the command whose median duration is the default expectation


def forecast_for(st: Settings, now: float, horizon_s: float) -> Tuple[List[Segment], Optional[str], List[str]]:
    """(segments, source, notes) covering [now, now + horizon_s] as far as a forecast exists.

    The steps follow the intensity precedence: a fixed figure has nothing to plan, an --intensity-file
    series may reach into the future, a live provider may publish a forecast; the packaged tables hold
    annual averages, so without those there is no forecast (and the notes say so).
    """
    if st.intensity is not None:
        return [], "flag", ["a fixed --intensity is the same at every hour: nothing to plan"]
    if st.intensity_file:
        return _from_file(st.intensity_file, now)
    if providers.configured(st.provider):
        return _from_provider(st, now, horizon_s)
    return [], None, ["no forecast: the packaged tables hold annual averages (configure a live provider with "
                      "forecasts, or pass an --intensity-file series that reaches into the future)"]


def _from_file(path: str, now: float) -> Tuple[List[Segment], Optional[str], List[str]]:
    try:
        series = load_intensity_file(path).series
    except IntensityFileError as e:
        raise CarbonrunError(str(e), 2) from None
    assert series is not None
    ends = series.starts[1:] + [series.end]
    segs = [(a, b, g) for a, b, g in zip(series.starts, ends, series.values) if b > a]
    source = f"file:{os.path.basename(path)}"
    if series.end <= now:
        return [], source, [f"the intensity file ends at {iso(series.end)}, before now: no forecast in it"]
    return segs, source, []


def _from_provider(st: Settings, now: float, horizon_s: float) -> Tuple[List[Segment], Optional[str], List[str]]:
    from carbonrun.intensity.providers.base import ProviderError  # urllib and the providers: only now

    opts = provider_defaults(provider_options(st), st.region, str(paths.cache_dir()), 3.0)
    try:
        provider = providers.get_provider(str(st.provider), opts)
    except ValueError as e:
        raise CarbonrunError(str(e), 2) from None
    source = f"provider:{provider.name}"
    try:
        segs = list(provider.forecast(now, now + horizon_s))
    except ProviderError as e:
        return [], source, [f"no forecast from {provider.title}: {e}"]
    except Exception as e:  # a provider bug must not stop the run
        return [], source, [f"no forecast from {provider.title} ({type(e).__name__})"]
    if segs and min(s[0] for s in segs) > now:  # forecasts may start at the next hour: add the current value
        try:
            g, t_from, t_to = provider.current()
            if t_from <= now < t_to:
                segs.append((t_from, min(t_to, min(s[0] for s in segs)), g))
        except Exception:  # the forecast alone still decides
            pass
    return segs, source, []


def decide(st: Settings, now: float, window_s: float, duration_s: float) -> Plan:
    """The plan for a job of duration_s starting within window_s of now."""
    segs, source, notes = forecast_for(st, now, window_s + duration_s)
    try:
        plan = best_start(segs, now, window_s, duration_s, source=source)
    except ValueError as e:
        raise CarbonrunError(str(e), 2) from None
    plan.notes = notes + (plan.notes if segs or not notes else [])  # the caller's reason says it better
    return plan


def earlier_durations(store: Any, argv: Sequence[str]) -> List[float]:
    """Durations of the latest completed runs of exactly this command (newest first), from an open run
    store; [] when it cannot be read (the history is only a default)."""
    try:
        runs = store.query(command=" ".join(argv), status="completed", limit=10 * HISTORY_RUNS, summary=True)
    except Exception:  # no store yet, or one that cannot be read
        return []
    return [float(r["duration_s"]) for r in runs
            if r.get("command") == list(argv) and r.get("duration_s") is not None][:HISTORY_RUNS]


def expected_duration(st: Settings, earlier: Callable[[], Sequence[float]]) -> Tuple[float, str]:
    """(seconds, where it came from): the setting, else the median of earlier completed runs."""
    if st.values.get("expected_duration"):
        where = st.sources.get("expected_duration", "flag")
        return float(st.expected_duration), "--expected-duration" if where == "flag" else where
    durations = sorted(earlier())
    if not durations:
        raise CarbonrunError("no earlier completed run of this command to take its duration from: "
                             "give --expected-duration (like 45m or 2h)", 2)
    n = len(durations)
    median = durations[n // 2] if n % 2 else (durations[n // 2 - 1] + durations[n // 2]) / 2
    return max(median, 1.0), f"median of {n} earlier completed run{'s' * (n > 1)}"


# -- waiting ---------------------------------------------------------------------------------------------
def wait_until(start_at: float, *, clock: Callable[[], float], sleep: Callable[[float], Optional[int]],
               tick: Optional[Callable[[float], None]] = None, max_step: float = 1.0) -> Optional[int]:
    """Wait until the clock reaches start_at; None when it is time, else the signal that cancelled it.

    sleep(timeout) returns a signal number when one arrived (the CLI passes sigtimedwait); tick(seconds
    left) runs before each sleep (the countdown). Steps are short so a clock jump (suspend) is noticed.
    """
    while True:
        left = start_at - clock()
        if left <= 0:
            return None
        if tick is not None:
            tick(left)
        sig = sleep(min(left, max_step))
        if sig:
            return sig


# -- what the summary says -------------------------------------------------------------------------------
def summary_line(record: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """("plan", text) comparing the plan's forecast with the intensity the run really got; None if no plan."""
    plan = record.get("plan")
    if not plan:
        return None
    fc, now_g = plan.get("forecast_g_per_kwh"), plan.get("now_g_per_kwh")
    if fc is None:
        return "plan", "no forecast was available; started at once"
    text = f"forecast {fc:.0f} g/kWh" + (f", {_below(fc, now_g)} {now_g:.0f} at decision time" if now_g else "")
    ci = record.get("intensity") or {}
    if ci.get("g_per_kwh") is not None and record.get("status") != "running":
        r = float(ci["g_per_kwh"])
        text += f"; realised {r:.0f} g/kWh ({ci.get('source', '?')})" + (f", {_below(r, now_g)}" if now_g else "")
    waited = plan.get("waited_s")
    return "plan", (f"waited {format_duration(waited)}; " if waited else "") + text


def _below(g: float, ref: float) -> str:
    pct = (ref - g) / ref * 100.0
    return f"{pct:.0f}% below" if pct >= 0 else f"{-pct:.0f}% above"


# -- helpers ---------------------------------------------------------------------------------------------


def _round(x: Optional[float], nd: int = 2) -> Optional[float]:
    return None if x is None else round(x, nd)
