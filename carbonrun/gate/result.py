"""What a gate decided, and its JSON schema: one object that the terminal, Markdown and JSON views share."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from carbonrun.gate import stats
from carbonrun.gate.paired import MetricChoice, Plan
from carbonrun.gate.stats import Record
from carbonrun.report import units

PASS, FAIL, USAGE, COMMAND_FAILED = 0, 1, 2, 3  # the gate's documented exit codes


@dataclass
class Paired:
    """How a paired (A/B) gate ran: what the baseline was, in which order, and when it stopped."""

    source: str  # the baseline command, or "REF (worktree)"
    command: List[str]
    order: List[str]  # per pair: "bc" (baseline first) or "cb"
    seed: int
    plan: Plan
    choice: MetricChoice
    log_ratios: List[float]
    looks: List[Dict[str, Any]] = field(default_factory=list)  # pairs, alpha, verdict at each look taken
    ref: Optional[str] = None
    commit: Optional[str] = None

    @property
    def sequential(self) -> bool:
        return len(self.plan.looks) > 1

    @property
    def stopped_early(self) -> bool:
        return len(self.log_ratios) < self.plan.max_pairs


@dataclass
class GateResult:
    """Everything the renderers need, gathered once."""

    metric: str
    samples: List[float]
    records: List[Record]
    gate_id: str
    baseline: Optional[stats.Baseline] = None  # None: budget-only, or --update-baseline
    comparison: Optional[stats.Comparison] = None
    budgets: List[stats.Budget] = field(default_factory=list)
    written: Optional[str] = None  # baseline file written, if any
    warnings: List[str] = field(default_factory=list)
    paired: Optional[Paired] = None
    baseline_records: List[Record] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        regressed = self.comparison is not None and self.comparison.verdict == "regression"
        return regressed or any(b.exceeded for b in self.budgets)

    @property
    def exit_code(self) -> int:
        return FAIL if self.failed else PASS


def fmt(metric: str, x: float) -> str:
    if metric == "energy":
        return units.energy(x)
    if metric == "emissions":
        return units.mass(x)
    if metric == "cpu-energy":
        return f"{x:.4g} J"
    return f"{x:.3f} s"


def verdict_word(out: GateResult) -> str:
    c = out.comparison
    if c is not None and c.verdict == "regression":
        return "regression"
    if any(b.exceeded for b in out.budgets):
        return "budget exceeded"
    if c is not None:
        return c.verdict
    return "baseline written" if out.written else "within budget"


def explain(out: GateResult) -> List[str]:
    """One sentence per reason the verdict is what it is."""
    lines = []
    c = out.comparison
    what = f"the paired {out.metric} ratio" if out.paired else f"the median {out.metric}"
    if c is not None:
        p = None if c.test is None else c.test.p_greater if c.change_pct >= 0 else c.test.p_less
        p_text = f"p = {p:.3g}" if p is not None else "no test"
        thr = c.threshold_pct
        size = f"{abs(c.change_pct):.1f}%"
        if c.verdict == "regression":
            lines.append(f"{what} rose {size}, beyond +{thr:g}%"
                         + (f", and the rise is significant ({p_text} < {c.alpha:.3g})" if c.test else ""))
        elif c.verdict == "improvement":
            lines.append(f"{what} fell {size}, beyond -{thr:g}%"
                         + (f", and the fall is significant ({p_text} < {c.alpha:.3g})" if c.test else ""))
        elif abs(c.change_pct) <= thr:
            lines.append(f"{what} changed {c.change_pct:+.1f}%, within ±{thr:g}%")
        else:
            lines.append(f"{what} changed {c.change_pct:+.1f}%, beyond ±{thr:g}%, but not "
                         f"significantly ({p_text} ≥ {c.alpha:.3g}): it may be noise")
    if out.paired is not None and out.paired.sequential:
        pr = out.paired
        n = len(pr.log_ratios)
        lines.append(f"decided after {n} of at most {pr.plan.max_pairs} pairs" if pr.stopped_early
                     else f"undecided before the last look: ran all {n} pairs")
    for b in out.budgets:
        shown = fmt("energy" if b.name == "kwh" else "emissions", b.value)
        limit = fmt("energy" if b.name == "kwh" else "emissions", b.limit)
        lines.append(f"budget {limit}: the median run used {shown}" + (": EXCEEDED" if b.exceeded else ": ok"))
    if out.written:
        lines.append(f"baseline written to {out.written} ({len(out.samples)} samples): commit it")
    return lines


def metric_text(choice: MetricChoice) -> str:
    """Why this metric, in one line: the paired spread of every candidate."""
    spreads = ", ".join(f"{name} {100 * s:.1f}%" if s is not None else f"{name} unusable (zero or too coarse)"
                        for name, s in choice.spreads.items())
    if choice.auto:
        return f"{choice.chosen}: tightest paired spread in this job ({spreads}; {choice.rule})"
    return f"{choice.chosen} as asked (paired spreads: {spreads})"


def to_json(out: GateResult) -> Dict[str, Any]:
    """The `carbonrun.gate/1` document; paired gates add `design`, `pairs` and `metric_choice`."""
    c = out.comparison
    doc: Dict[str, Any] = {
        "schema": stats.RESULT_SCHEMA, "verdict": verdict_word(out), "exit_code": out.exit_code,
        "metric": out.metric, "unit": stats.METRICS[out.metric][0], "gate": out.gate_id,
        "design": "paired" if out.paired else "baseline",
        "current": {**asdict(stats.summarize(out.samples)), "samples": out.samples,
                    "runs": [r["id"] for r in out.records]},
        "baseline": None if out.baseline is None else {
            **asdict(stats.summarize(out.baseline.samples)), "samples": out.baseline.samples,
            "source": out.baseline.source},
        "change_pct": c.change_pct if c else None,
        "ci_pct": list(c.ci_pct) if c and c.ci_pct else None,
        "ci_level": (c.ci_level or 1 - c.alpha) if c else None,
        "hodges_lehmann_pct": c.hl_pct if c else None,
        "threshold_pct": c.threshold_pct if c else None,
        "test": asdict(c.test) if c and c.test else None,
        "alpha": c.alpha if c else None,
        "runs_needed": c.runs_needed if c else None,
        "budgets": [asdict(b) for b in out.budgets],
        "baseline_written": out.written,
        "explanation": explain(out),
        "warnings": out.warnings,
    }
    if out.paired is not None:
        pr = out.paired
        if doc["baseline"] is not None:
            doc["baseline"]["runs"] = [r["id"] for r in out.baseline_records]
        doc["pairs"] = {
            "n": len(pr.log_ratios), "order": pr.order, "seed": pr.seed, "baseline_command": pr.command,
            "ref": pr.ref, "commit": pr.commit,
            "log_ratios": pr.log_ratios,
            "sequential": {"max_pairs": pr.plan.max_pairs, "looks": list(pr.plan.looks),
                           "alphas": list(pr.plan.alphas), "taken": pr.looks,
                           "stopped_early": pr.stopped_early} if pr.sequential else None,
        }
        doc["metric_choice"] = {"chosen": pr.choice.chosen, "auto": pr.choice.auto, "rule": pr.choice.rule,
                                "spread_pct": {k: None if v is None else 100 * v
                                               for k, v in pr.choice.spreads.items()}}
    return doc
