"""Paired statistics for A/B gates: both commands run in the same job, alternating, and each pair's
log ratio (current over baseline) is one observation.

Pairing cancels what drifts between pairs on a shared machine (a neighbour's job starting, the host
throttling); what is left is the noise within a pair. The test is Wilcoxon's signed-rank test on the
log ratios, the estimate and interval are Hodges-Lehmann's (Walsh averages), and a sequential plan
lets clear cases stop after a few pairs. Pure Python, like stats.py; prints nothing.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from carbonrun.gate.stats import POWER, Comparison, TestResult, norm_cdf, norm_ppf, summarize

EXACT_MAX_PAIRS = 30  # exact signed-rank distribution up to this many nonzero pairs (and no tied |d|)
FIRST_LOOK = 5  # a sequential plan never looks before this many pairs
GROWTH = 1.5  # each sequential look comes after about 1.5x the pairs of the previous one
CHOICES = ("energy", "cpu-energy", "cpu-time")  # what `--metric auto` chooses from
RESOLUTION = {"cpu-time": 0.001, "cpu-energy": 0.001, "duration": 0.001}  # the record rounds s and J to 1/1000


# -- the signed-rank distribution ------------------------------------------------------------------

@lru_cache(maxsize=None)
def signed_rank_counts(n: int) -> Tuple[int, ...]:
    """How many of the 2^n sign patterns give W+ = 0 .. n(n+1)/2 (no ties, no zeros).

    W+ sums the ranks carrying a + sign, so its counts are those of the subset sums of {1..n}:
    counts(n)[w] = counts(n-1)[w] + counts(n-1)[w-n] (rank n is either - or +).
    """
    if n == 0:
        return (1,)
    prev = signed_rank_counts(n - 1)
    out = list(prev) + [0] * n
    for w, k in enumerate(prev):
        out[w + n] += k
    return tuple(out)


def _ranks(values: Sequence[float]) -> List[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def wilcoxon(d: Sequence[float]) -> TestResult:
    """One-sided Wilcoxon signed-rank test of the differences `d`, both directions.

    Zero differences are dropped (Wilcoxon's convention). Exact when at most EXACT_MAX_PAIRS remain
    and no |d| repeats; otherwise the normal approximation with the tie-corrected variance
    n(n+1)(2n+1)/24 - sum(t^3 - t)/48 and a continuity correction of 0.5.
    """
    nz = [x for x in d if x != 0]
    n = len(nz)
    if n == 0:
        return TestResult("Wilcoxon signed-rank", 0.0, 1.0, 1.0, "exact")
    ranks = _ranks([abs(x) for x in nz])
    w = sum(r for r, x in zip(ranks, nz) if x > 0)
    tied = len(set(abs(x) for x in nz)) < n
    if n <= EXACT_MAX_PAIRS and not tied:
        counts, total = signed_rank_counts(n), 2 ** n
        k = int(w)
        return TestResult("Wilcoxon signed-rank", w, sum(counts[k:]) / total, sum(counts[:k + 1]) / total, "exact")
    groups: Dict[float, int] = {}
    for r in ranks:
        groups[r] = groups.get(r, 0) + 1
    var = n * (n + 1) * (2 * n + 1) / 24.0 - sum(t ** 3 - t for t in groups.values()) / 48.0
    mu = n * (n + 1) / 4.0
    if var <= 0:
        return TestResult("Wilcoxon signed-rank", w, 1.0, 1.0, "normal approximation")
    sd = math.sqrt(var)
    return TestResult("Wilcoxon signed-rank", w, 1.0 - norm_cdf((w - mu - 0.5) / sd), norm_cdf((w - mu + 0.5) / sd),
                      "normal approximation")


def walsh_interval(d: Sequence[float], tail: float) -> Tuple[float, Optional[Tuple[float, float]]]:
    """Hodges-Lehmann estimate (median of the Walsh averages (d_i + d_j)/2, i <= j) and the interval
    from the k-th smallest to the k-th largest Walsh average, leaving at most `tail` on each side.

    k comes from the signed-rank null distribution (exact up to EXACT_MAX_PAIRS, normal beyond), so the
    interval is the set of shifts the test at one-sided level `tail` does not reject: no resampling,
    no seed. None when there are too few pairs for the level.
    """
    n = len(d)
    walsh = sorted((d[i] + d[j]) / 2.0 for i in range(n) for j in range(i, n))
    est = statistics.median(walsh)
    if n <= EXACT_MAX_PAIRS:
        counts, total = signed_rank_counts(n), 2 ** n
        k, cum = 0, counts[0]
        while cum / total <= tail:  # k = how many lower-tail values w have P(W+ <= w) <= tail
            k += 1
            cum += counts[k]
    else:
        k = math.floor(n * (n + 1) / 4.0 - norm_ppf(1.0 - tail) * math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0))
    if k < 1:
        return est, None
    return est, (walsh[k - 1], walsh[len(walsh) - k])


def log_ratios(base: Sequence[float], cur: Sequence[float]) -> List[float]:
    """log(current / baseline) per pair: symmetric in the two commands, and a ratio is what drifts less."""
    return [math.log(c / b) for b, c in zip(base, cur)]


# -- the sequential plan ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """When to look (after how many pairs) and the one-sided error rate each look may spend.

    The spends add up to at most alpha, and each look's exact test holds its own spend, so by the
    union bound the chance that identical commands are ever called a regression (or an improvement)
    is at most alpha however many looks there are; likewise for stopping early with "no change"
    when the true change is exactly the threshold.
    """

    looks: Tuple[int, ...]
    alphas: Tuple[float, ...]

    @property
    def max_pairs(self) -> int:
        return self.looks[-1]


def fixed_plan(pairs: int, alpha: float) -> Plan:
    return Plan((pairs,), (alpha,))


def sequential_plan(max_pairs: int, alpha: float) -> Plan:
    """Looks after FIRST_LOOK pairs and then about GROWTH times as many, up to max_pairs.

    The last look spends alpha/2; the earlier looks share the other half equally. The first look
    comes no sooner than the exact test can reach its share (2^-n <= share with n pairs), so a
    clear case stops there when every pair points the same way.
    """
    first = FIRST_LOOK
    while True:
        looks = _schedule(first, max_pairs)
        if len(looks) == 1:
            return fixed_plan(max_pairs, alpha)
        share = alpha / 2.0 / (len(looks) - 1)
        if 2.0 ** -first <= share:
            return Plan(looks, tuple([share] * (len(looks) - 1) + [alpha / 2.0]))
        first += 1


def _schedule(first: int, last: int) -> Tuple[int, ...]:
    looks, n = [], first
    while n < last:
        looks.append(n)
        n = max(n + 2, round(n * GROWTH))
    if looks and last - looks[-1] < 2:
        looks.pop()  # one more pair would not tell much: look at the end instead
    return tuple(looks + [last])


# -- the verdict -----------------------------------------------------------------------------------

@dataclass
class Look:
    """The state of a paired gate after `pairs` pairs, at the error rate this look may spend."""

    pairs: int
    alpha: float
    estimate: float  # Hodges-Lehmann median log ratio
    interval: Optional[Tuple[float, float]]  # one-sided (1 - alpha) bounds on each side
    test: Optional[TestResult]
    verdict: Optional[str]  # regression | improvement | no change | None (undecided: run more pairs)


def judge(d: Sequence[float], threshold_pct: float, alpha: float, test: str, final: bool) -> Look:
    """Decide from the log ratios `d` at one look.

    Regression: the estimated rise is beyond the threshold AND the one-sided test says it is not
    noise (p < alpha); improvement likewise downwards. Before the last look, "no change" needs the
    interval to exclude changes of the threshold's size both ways; at the last look it is the rest.
    """
    est, interval = walsh_interval(d, alpha)
    result = wilcoxon(d) if test == "wilcoxon" else None
    up_limit, down_limit = math.log1p(threshold_pct / 100.0), math.log1p(-min(threshold_pct, 99.9) / 100.0)
    up = est > up_limit and (result is None or result.p_greater < alpha)
    down = est < down_limit and (result is None or result.p_less < alpha)
    if up:
        verdict: Optional[str] = "regression"
    elif down:
        verdict = "improvement"
    elif final or (interval is not None and down_limit < interval[0] and interval[1] < up_limit):
        verdict = "no change"
    else:
        verdict = None
    return Look(len(d), alpha, est, interval, result, verdict)


def runs_needed(d: Sequence[float], threshold_pct: float, alpha: float, test: str) -> Optional[int]:
    """Pairs needed to catch a rise of the threshold's size with POWER, at one-sided alpha.

    n = ((z[1-alpha] + z[power]) * sd / log(1 + threshold))^2 for the paired t-test on the log
    ratios, divided by 3/pi (the signed-rank test's efficiency relative to it) for wilcoxon.
    """
    if len(d) < 2 or threshold_pct <= 0 or test == "none":
        return None
    sd = statistics.stdev(d)
    if sd <= 0:
        return None
    z = norm_ppf(1.0 - alpha) + norm_ppf(POWER)
    n = (z * sd / math.log1p(threshold_pct / 100.0)) ** 2
    if test == "wilcoxon":
        n /= 3.0 / math.pi
    return max(2, math.ceil(n))


def smallest_p(pairs: int) -> float:
    """The smallest one-sided p the exact signed-rank test can give with this many pairs."""
    return 2.0 ** -pairs


# -- choosing the metric ---------------------------------------------------------------------------

@dataclass
class MetricChoice:
    """Which metric the gate judged by and why: the spread of each candidate's per-pair log ratios."""

    chosen: str
    spreads: Dict[str, Optional[float]]  # root mean square log ratio; None: not usable (zero, or too coarse)
    auto: bool
    rule: str = field(default="the smallest root mean square of the per-pair log ratios")


def paired_spread(d: Sequence[float]) -> float:
    """Root mean square of the log ratios. It ignores their signs, so choosing the metric with the
    smallest one leaves each signed-rank test exact under "no change" (given the |d|, the signs are
    still fair coins); and a real change moves every metric alike, so it keeps the noise order."""
    return math.sqrt(statistics.fmean(x * x for x in d)) if d else 0.0


def usable(metric: str, base: Sequence[float], cur: Sequence[float]) -> bool:
    """Every value above zero, and at least 100 steps of the metric's resolution (the record keeps CPU
    seconds and joules to 3 decimals: a 5 ms command would show ratios in steps of 20%, and runs that
    round alike as no spread at all)."""
    floor = 100 * RESOLUTION.get(metric, 0.0)
    return all(x > floor for x in base) and all(x > floor for x in cur) and bool(base) and bool(cur)


def choose_metric(candidates: Mapping[str, Tuple[Sequence[float], Sequence[float]]]) -> MetricChoice:
    """The candidate (name -> (baseline samples, current samples)) with the tightest paired spread."""
    spreads: Dict[str, Optional[float]] = {}
    for name, (base, cur) in candidates.items():
        spreads[name] = paired_spread(log_ratios(base, cur)) if usable(name, base, cur) else None
    ranked = sorted((s, i, name) for i, (name, s) in enumerate(spreads.items()) if s is not None)
    if not ranked:
        raise ValueError("no usable metric")
    return MetricChoice(ranked[0][2], spreads, auto=True)


# -- the comparison the renderers share --------------------------------------------------------------

def comparison(base: Sequence[float], cur: Sequence[float], d: Sequence[float], look: Look,
               threshold_pct: float, test: str, sequential: bool) -> Comparison:
    """The look as a Comparison: change and interval as ratios in %.

    A fixed gate shows the two-sided 1 - alpha interval (as the unpaired gate does); a sequential
    one the interval its look decided with (1 - 2 * the look's share), which is the one that can
    say "no change" early.
    """
    tail = look.alpha if sequential else look.alpha / 2.0
    _, ci = walsh_interval(d, tail)
    def pct(x: float) -> float:
        return 100.0 * math.expm1(x)

    change = pct(look.estimate)
    needed = runs_needed(d, threshold_pct, look.alpha, test)
    comp = Comparison(summarize(base), summarize(cur), change, None if ci is None else (pct(ci[0]), pct(ci[1])),
                      change, look.test, look.alpha, threshold_pct, look.verdict or "no change", needed,
                      ci_level=1.0 - 2.0 * tail)
    if needed is not None and needed > look.pairs:
        comp.warnings.append(
            f"the paired spread is wide for the threshold: about {needed} pairs are needed to catch a "
            f"+{threshold_pct:g}% increase with {POWER:.0%} power (now {look.pairs}); try --max-runs {needed}")
    if test == "wilcoxon" and smallest_p(look.pairs) >= look.alpha:
        comp.warnings.append(f"with {look.pairs} pairs the smallest possible p is {smallest_p(look.pairs):.3f}, "
                             f"not below {look.alpha:.3g}: no change can be significant; add pairs")
    return comp
