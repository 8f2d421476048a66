"""The energy-regression gate's core: statistics, verdict, budgets, baseline file. Prints nothing.

Pure Python on purpose (no scipy): the gate runs in CI images where a heavy numeric stack is not
wanted, and every formula used here is short enough to test against closed forms and tables.
Running the commands is runner.py; paired (A/B) statistics are paired.py; rendering is cli/gate.py.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from carbonrun import __version__, timefmt
from carbonrun.units import counted_j
from carbonrun.files import write_atomic
from carbonrun.validate import is_sane, SAMPLE

BASELINE_SCHEMA = "carbonrun.gate-baseline/1"
RESULT_SCHEMA = "carbonrun.gate/1"
EXACT_MAX_N = 20  # exact Mann-Whitney distribution up to this many samples per group (and no ties)
POWER = 0.8  # the power the "runs needed" advice is computed for
MEMORY_TOLERANCE = 0.05  # memory sizes within 5% are the same machine class (kernel reservations vary)


class GateError(Exception):
    """A usage-level failure (missing/corrupt baseline, not comparable): the CLI exits 2."""


# -- metrics ---------------------------------------------------------------------------------------

Record = Mapping[str, Any]  # a run record (record.RunRecord) or one read back from a store


def _cpu_energy(record: Record) -> float:
    attribution = record.get("attribution")
    return sum(counted_j(c, attribution) for c in record.get("components", []) if c.get("component") == "cpu")


METRICS: Dict[str, Tuple[str, Callable[[Record], float]]] = {
    "energy": ("kWh", lambda r: float(r["energy"]["total_kwh"])),
    "emissions": ("kg CO2eq", lambda r: float(r["emissions"]["kg"])),
    "cpu-energy": ("J", _cpu_energy),
    "duration": ("s", lambda r: float(r["duration_s"])),
    "cpu-time": ("s", lambda r: float((r.get("usage") or {}).get("job_cpu_s", 0.0))),
}


def metric_value(record: Record, metric: str) -> float:
    return METRICS[metric][1](record)


# -- descriptive statistics ------------------------------------------------------------------------

def quantile(xs: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (the usual 'type 7' definition)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def cv(xs: Sequence[float]) -> float:
    """Coefficient of variation (sample standard deviation / mean); 0 for fewer than 2 samples."""
    if len(xs) < 2:
        return 0.0
    mean = statistics.fmean(xs)
    return statistics.stdev(xs) / abs(mean) if mean else 0.0


@dataclass
class Summary:
    n: int
    median: float
    iqr: float
    mad: float
    cv: float


def summarize(xs: Sequence[float]) -> Summary:
    med = statistics.median(xs)
    return Summary(len(xs), med, quantile(xs, 0.75) - quantile(xs, 0.25),
                   statistics.median(abs(x - med) for x in xs), cv(xs))


# -- distributions ---------------------------------------------------------------------------------

def norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """Inverse of norm_cdf by bisection: slow but exact to double precision, and called rarely."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if norm_cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _beta_cf(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (A&S 26.5.8), evaluated by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-15
    f = c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 1000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            delta = c * d
            f *= delta
        if abs(delta - 1.0) < eps:
            break
    return f


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b); the fraction converges fast below the mean, so swap above it."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom (df may be fractional, as Welch's is)."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


# -- tests -----------------------------------------------------------------------------------------

@dataclass
class TestResult:
    name: str
    statistic: float
    p_greater: float  # one-sided p for "the current runs are larger"
    p_less: float  # one-sided p for "the current runs are smaller"
    method: str  # exact | normal approximation | t distribution
    df: Optional[float] = None


@lru_cache(maxsize=None)
def u_counts(m: int, n: int) -> Tuple[int, ...]:
    """How many of the C(m+n, m) orderings give U = 0..m*n (no ties).

    U counts pairs where an x beats a y. The largest value is an x (beating all n y's) or a y
    (beating nothing), hence counts(m, n)[u] = counts(m-1, n)[u-n] + counts(m, n-1)[u].
    """
    if m == 0 or n == 0:
        return (1,)
    with_x, with_y = u_counts(m - 1, n), u_counts(m, n - 1)
    out = [0] * (m * n + 1)
    for u, k in enumerate(with_x):
        out[u + n] += k
    for u, k in enumerate(with_y):
        out[u] += k
    return tuple(out)


def _u_statistic(x: Sequence[float], y: Sequence[float]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)


def _tie_term(values: Sequence[float]) -> float:
    counts: Dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sum(t ** 3 - t for t in counts.values())


def mann_whitney(base: Sequence[float], cur: Sequence[float]) -> TestResult:
    """One-sided Mann-Whitney U of `cur` against `base`, both directions.

    Exact when both groups have at most EXACT_MAX_N samples and no value repeats; otherwise the
    normal approximation with the tie-corrected variance and a continuity correction of 0.5.
    """
    m, n = len(cur), len(base)
    u = _u_statistic(cur, base)
    pooled = list(cur) + list(base)
    ties = _tie_term(pooled)
    if m <= EXACT_MAX_N and n <= EXACT_MAX_N and ties == 0:
        counts = u_counts(m, n)
        total = math.comb(m + n, m)
        k = int(u)
        return TestResult("Mann-Whitney U", u, sum(counts[k:]) / total, sum(counts[:k + 1]) / total, "exact")
    big_n = m + n
    var = m * n / 12.0 * ((big_n + 1) - ties / (big_n * (big_n - 1)))
    if var <= 0:
        return TestResult("Mann-Whitney U", u, 1.0, 1.0, "normal approximation")
    sd, mu = math.sqrt(var), m * n / 2.0
    return TestResult("Mann-Whitney U", u, 1.0 - norm_cdf((u - mu - 0.5) / sd), norm_cdf((u - mu + 0.5) / sd),
                      "normal approximation")


def welch(base: Sequence[float], cur: Sequence[float]) -> TestResult:
    """One-sided Welch t-test: unequal variances, Welch-Satterthwaite degrees of freedom."""
    if len(base) < 2 or len(cur) < 2:
        raise GateError("Welch's t-test needs at least 2 samples in each group")
    vb, vc = statistics.variance(base) / len(base), statistics.variance(cur) / len(cur)
    diff = statistics.fmean(cur) - statistics.fmean(base)
    se2 = vb + vc
    if se2 == 0:  # no spread at all: the sign of the difference is the whole answer
        return TestResult("Welch t", math.copysign(math.inf, diff) if diff else 0.0,
                          0.0 if diff > 0 else 1.0, 0.0 if diff < 0 else 1.0, "t distribution")
    df = se2 ** 2 / (vb ** 2 / (len(base) - 1) + vc ** 2 / (len(cur) - 1))
    t = diff / math.sqrt(se2)
    return TestResult("Welch t", t, t_sf(t, df), t_sf(-t, df), "t distribution", df)


def run_test(name: str, base: Sequence[float], cur: Sequence[float]) -> Optional[TestResult]:
    if name == "mannwhitney":
        return mann_whitney(base, cur)
    if name == "welch":
        return welch(base, cur)
    return None


def hodges_lehmann(base: Sequence[float], cur: Sequence[float],
                   confidence: float) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Shift estimate (median of all cur - base differences) and its distribution-free interval.

    The interval runs from the k-th smallest to the k-th largest difference, k taken from the
    Mann-Whitney null distribution (exact up to EXACT_MAX_N per group, normal beyond), so it needs
    no resampling and no seed. None when the samples are too small for the confidence asked.
    """
    diffs = sorted(c - b for c in cur for b in base)
    m, n = len(cur), len(base)
    half = (1.0 - confidence) / 2.0
    if m <= EXACT_MAX_N and n <= EXACT_MAX_N:
        counts, total = u_counts(m, n), math.comb(m + n, m)
        k, cum = 0, counts[0]
        while cum / total <= half:  # k = number of lower-tail values with P(U <= k-1) <= half
            k += 1
            cum += counts[k]
    else:
        k = math.floor(m * n / 2.0 - norm_ppf(1.0 - half) * math.sqrt(m * n * (m + n + 1) / 12.0))
    hl = statistics.median(diffs)
    if k < 1:
        return hl, None
    return hl, (diffs[k - 1], diffs[len(diffs) - k])


def runs_needed(cv_pooled: float, threshold: float, alpha: float, test: str) -> Optional[int]:
    """Runs per group to detect a `threshold` relative increase with POWER, at one-sided `alpha`.

    Normal approximation for two groups: n = 2 (z_{1-alpha} + z_{power})^2 (CV / threshold)^2,
    divided by 3/pi (Mann-Whitney's efficiency relative to the t-test on normal data) for mannwhitney.
    """
    if threshold <= 0 or cv_pooled <= 0 or test == "none":
        return None
    z = norm_ppf(1.0 - alpha) + norm_ppf(POWER)
    n = 2.0 * (z * cv_pooled / threshold) ** 2
    if test == "mannwhitney":
        n /= 3.0 / math.pi
    return max(2, math.ceil(n))


# -- verdict ---------------------------------------------------------------------------------------

@dataclass
class Comparison:
    baseline: Summary
    current: Summary
    change_pct: float  # median change in % of the baseline median
    ci_pct: Optional[Tuple[float, float]]  # Hodges-Lehmann interval of the shift, in % of the baseline median
    hl_pct: float
    test: Optional[TestResult]
    alpha: float
    threshold_pct: float
    verdict: str  # regression | improvement | no change
    runs_needed: Optional[int]
    warnings: List[str] = field(default_factory=list)
    ci_level: Optional[float] = None  # two-sided level of ci_pct; None: 1 - alpha


def compare(base: Sequence[float], cur: Sequence[float], max_increase_pct: float, test: str,
            confidence: float) -> Comparison:
    """Regression only when the median grew beyond the threshold AND the one-sided test says so."""
    sb, sc = summarize(base), summarize(cur)
    if sb.median <= 0:
        raise GateError("the baseline median is zero: a change in % cannot be computed (pick another --metric)")
    change = 100.0 * (sc.median / sb.median - 1.0)
    hl, ci = hodges_lehmann(base, cur, confidence)
    alpha = round(1.0 - confidence, 12)  # 1 - 0.95 is 0.05000000000000004: an exact p of 0.05 is not below it
    result = run_test(test, base, cur)
    up = change > max_increase_pct and (result is None or result.p_greater < alpha)
    down = change < -max_increase_pct and (result is None or result.p_less < alpha)
    verdict = "regression" if up else "improvement" if down else "no change"
    pooled_cv = math.sqrt((sb.cv ** 2 + sc.cv ** 2) / 2.0)
    needed = runs_needed(pooled_cv, max_increase_pct / 100.0, alpha, test)
    comp = Comparison(sb, sc, change, _pct(ci, sb.median), 100.0 * hl / sb.median, result, alpha,
                      max_increase_pct, verdict, needed)
    comp.warnings = spread_warnings(comp, test)
    return comp


def _pct(ci: Optional[Tuple[float, float]], ref: float) -> Optional[Tuple[float, float]]:
    return None if ci is None else (100.0 * ci[0] / ref, 100.0 * ci[1] / ref)


def spread_warnings(c: Comparison, test: str) -> List[str]:
    """Say when the gate cannot see a regression of the threshold's size, and what would fix it."""
    out = []
    have = min(c.baseline.n, c.current.n)
    if c.runs_needed is not None and c.runs_needed > have:
        cv_pct = 100.0 * math.sqrt((c.baseline.cv ** 2 + c.current.cv ** 2) / 2.0)
        out.append(f"the spread is wide for the threshold: CV {cv_pct:.1f}% against +{c.threshold_pct:g}%; "
                   f"about {c.runs_needed} runs per side are needed to catch a +{c.threshold_pct:g}% increase "
                   f"with {POWER:.0%} power (now {c.baseline.n} baseline, {c.current.n} current)")
    if test == "mannwhitney" and c.test is not None and c.test.method == "exact":
        floor = 1.0 / math.comb(c.baseline.n + c.current.n, c.current.n)
        if floor >= c.alpha:
            out.append(f"with {c.baseline.n} and {c.current.n} runs the smallest possible p is {floor:.3f}, "
                       f"not below {c.alpha:g}: no change can be significant; add runs")
    return out


@dataclass
class Budget:
    name: str  # kwh | kg
    limit: float
    value: float  # the median run's figure
    exceeded: bool


def budgets(records: Sequence[Record], max_kwh: Optional[float], max_kg: Optional[float]) -> List[Budget]:
    out = []
    for name, limit, metric in (("kwh", max_kwh, "energy"), ("kg", max_kg, "emissions")):
        if limit is not None:
            value = statistics.median(metric_value(r, metric) for r in records)
            out.append(Budget(name, limit, value, value > limit))
    return out


# -- baseline file and comparability ---------------------------------------------------------------

def fingerprint(host: Mapping[str, Any]) -> Dict[str, Any]:
    """What makes energy figures comparable between machines. The hostname is left out on purpose:
    CI runners get a fresh name per job, while the CPU model, thread count, memory size (it drives
    the memory estimate), virtualisation and GPU models are what change the joules."""
    return {"cpu_model": host.get("cpu_model"), "cpu_threads": host.get("cpu_threads"),
            "memory_gb": host.get("memory_gb"), "virtualised": host.get("virtualised"),
            "gpus": sorted(g.get("name", "?") for g in host.get("gpus") or [])}


def meter_set(components: Sequence[Any]) -> List[Dict[str, Any]]:
    """Which devices were metered and how (measured vs estimated), from record components or meters."""
    def get(c: Any, k: str) -> Any:
        return c.get(k) if isinstance(c, dict) else getattr(c, k)
    rows = [{"component": get(c, "component"), "device": get(c, "device"), "source": get(c, "source"),
             "estimated": bool(get(c, "estimated"))} for c in components]
    return sorted(rows, key=lambda r: (r["component"], r["device"]))


@dataclass
class Baseline:
    metric: str
    samples: List[float]
    host: Dict[str, Any]  # fingerprint()
    meters: List[Dict[str, Any]]  # meter_set()
    settings: Dict[str, Any]  # attribution, pue: both scale the figures
    command: List[str]
    carbonrun_version: str
    created_at: str = ""
    runs: List[str] = field(default_factory=list)  # uuids of the stored runs
    source: str = ""  # where it came from, for messages (not written)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return {"schema": BASELINE_SCHEMA, "unit": METRICS[self.metric][0],
                "median": statistics.median(self.samples), **d}


def settings_of(record: Record) -> Dict[str, Any]:
    return {"attribution": record.get("attribution"), "pue": (record.get("energy") or {}).get("pue")}


def from_records(records: Sequence[Record], metric: str, source: str) -> Baseline:
    """A baseline from stored runs (oldest first); host and meters are those of the newest."""
    ordered = sorted(records, key=lambda r: r.get("started_at") or "")
    last = ordered[-1]
    return Baseline(metric, [metric_value(r, metric) for r in ordered], fingerprint(last["host"]),
                    meter_set(last["components"]), settings_of(last), list(last.get("command", [])),
                    __version__, timefmt.iso(time.time()),
                    [r["uuid"] for r in ordered], source)


def write_baseline(path: str, baseline: Baseline) -> None:
    """Atomic replace, so a CI job killed mid-write never leaves a corrupt committed file."""
    write_atomic(path, json.dumps(baseline.to_json(), indent=2) + "\n", mode=0o644)  # committed to a repo


def read_baseline(path: str) -> Baseline:
    from carbonrun.config import read_limited  # a committed file: a link to /dev/zero must not hang the gate

    try:
        data = json.loads(read_limited(path, 16 << 20))
    except FileNotFoundError:
        raise GateError(f"baseline {path} not found: create it with `carbonrun gate --baseline {path} "
                        "--update-baseline -- COMMAND` and commit it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise GateError(f"baseline {path} is not readable JSON ({e}); regenerate it with --update-baseline") from None
    problem = _baseline_problem(data)
    if problem:
        raise GateError(f"baseline {path} is corrupt: {problem}; regenerate it with --update-baseline")
    return Baseline(data["metric"], [float(x) for x in data["samples"]], data["host"], data["meters"],
                    data.get("settings") or {}, list(data.get("command") or []),
                    str(data.get("carbonrun_version", "?")), str(data.get("created_at", "")),
                    list(data.get("runs") or []), path)


def _baseline_problem(data: object) -> Optional[str]:
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        return f"not a {BASELINE_SCHEMA} document"
    if data.get("metric") not in METRICS:
        return f"unknown metric {data.get('metric')!r}"
    samples = data.get("samples")

    if not isinstance(samples, list) or not samples or not all(
            isinstance(x, (int, float)) and is_sane(x, SAMPLE) for x in samples):
        return "samples must be a non-empty list of finite numbers from 0 to 1e12"
    if not isinstance(data.get("host"), dict) or not isinstance(data.get("meters"), list):
        return "host or meters missing"
    return None


def differences(baseline: Baseline, host: Mapping[str, Any], meters: List[Dict[str, Any]],
                settings: Dict[str, Any]) -> List[str]:
    """Why the baseline's figures cannot be compared with this machine's (empty when they can)."""
    out = []
    now = fingerprint(host)
    for key, was in baseline.host.items():
        new = now.get(key)
        if key == "memory_gb" and was and new:
            if abs(new - was) <= MEMORY_TOLERANCE * max(was, new):
                continue
        if was != new:
            out.append(f"host {key} {was!r} in the baseline, {new!r} here")
    if _meter_key(baseline.meters) != _meter_key(meters):
        out.append(f"meters {_describe(baseline.meters)} in the baseline, {_describe(meters)} here")
    for key, was in baseline.settings.items():
        if was is not None and settings.get(key) != was:
            out.append(f"{key} {was!r} in the baseline, {settings.get(key)!r} here")
    return out


def _meter_key(meters: Sequence[Dict[str, Any]]) -> List[Tuple[Any, ...]]:
    return sorted((m.get("component"), m.get("device"), m.get("source"), bool(m.get("estimated")))
                  for m in meters)


def _describe(meters: Sequence[Dict[str, Any]]) -> str:
    return ", ".join(f"{m.get('component')}:{m.get('device')} "
                     f"({'estimated' if m.get('estimated') else 'measured'} by {m.get('source')})"
                     for m in meters) or "none"
