"""`carbonrun gate`: run a command N times, compare a metric with a baseline, exit 0/1/2/3 for CI."""
from __future__ import annotations

import json
import os
import shlex
import sys
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import click

from carbonrun.cli.run import flag_values, run_options
from carbonrun.errors import CarbonrunError

PASS, FAIL, USAGE, COMMAND_FAILED = 0, 1, 2, 3


@dataclass
class GateResult:
    """Everything the renderers need, gathered once."""

    metric: str
    samples: List[float]
    records: List[dict]
    gate_id: str
    baseline: Any = None  # gate.Baseline or None (budget-only, or --update-baseline)
    comparison: Any = None  # gate.Comparison or None
    budgets: List[Any] = field(default_factory=list)
    written: Optional[str] = None  # baseline file written, if any
    warnings: List[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        regressed = self.comparison is not None and self.comparison.verdict == "regression"
        return regressed or any(b.exceeded for b in self.budgets)


def _percent(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        x = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a percentage like 5 or 5%") from None
    if x < 0:
        raise click.BadParameter("must be 0% or more")
    return x


def _tag_pair(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[Tuple[str, str]]:
    if value is None:
        return None
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{value!r} is not TAG=VALUE")
    return key, val


@click.command(context_settings={"allow_interspersed_args": False},
               epilog="Examples:\n\n"
                      "  carbonrun gate --baseline .carbonrun/baseline.json --update-baseline -- python bench.py\n\n"
                      "  carbonrun gate --baseline .carbonrun/baseline.json -- python bench.py\n\n"
                      "  carbonrun gate --tag branch=feature --against branch=main --runs 7 -- make bench\n\n"
                      "  carbonrun gate --max-kwh 0.5 -- python train.py --epochs 1")
@run_options
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Measured runs.")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True,
              help="Unmeasured runs first (caches, JIT, page cache).")
@click.option("--metric", type=click.Choice(["energy", "emissions", "cpu-energy", "duration"]), default="energy",
              show_default=True, help="energy = total kWh; cpu-energy = the job's CPU joules; emissions = kg CO2eq.")
@click.option("--baseline", "baseline_path", metavar="FILE", help="JSON baseline committed to the repository.")
@click.option("--update-baseline", is_flag=True, help="Write FILE from these runs instead of comparing.")
@click.option("--update-baseline-on-improvement", is_flag=True,
              help="Rewrite FILE from these runs when they are a significant improvement.")
@click.option("--against", metavar="TAG=VALUE", callback=_tag_pair,
              help="Compare with the last stored runs carrying this tag (e.g. branch=main).")
@click.option("--against-limit", type=click.IntRange(1), default=10, show_default=True,
              help="How many stored runs --against takes.")
@click.option("--max-increase", metavar="PCT", default="5", callback=_percent, show_default=True,
              help="Median increase (in %) beyond which a significant rise is a regression.")
@click.option("--test", "test_name", type=click.Choice(["mannwhitney", "welch", "none"]), default="mannwhitney",
              show_default=True, help="One-sided significance test; none = the threshold alone.")
@click.option("--confidence", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the test and of the interval.")
@click.option("--max-kwh", type=click.FloatRange(0.0, min_open=True), help="Budget: the median run's kWh.")
@click.option("--max-kg", type=click.FloatRange(0.0, min_open=True), help="Budget: the median run's kg CO2eq.")
@click.option("--allow-different-host", is_flag=True,
              help="Compare even when host, meters or settings differ from the baseline's.")
@click.option("--summary", "summary_path", metavar="FILE",
              help="Append the Markdown summary to FILE (default: $GITHUB_STEP_SUMMARY when set).")
@click.option("--json", "json_path", metavar="FILE", help="Write the result as JSON to FILE.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def gate(ctx: click.Context, command: Tuple[str, ...], **params: Any) -> int:
    """CI energy-regression gate: run COMMAND --runs times and compare with a baseline.

    A regression needs both: the median grew by more than --max-increase, and the one-sided
    test says the rise is not noise. Exit codes: 0 pass (no change or improvement), 1 regression
    or budget exceeded, 2 usage error (missing or corrupt baseline, not comparable), 3 COMMAND failed.
    """
    from carbonrun.measure.session import block_signals

    block_signals()  # before anything could start a thread: signals are taken with sigtimedwait
    _check_options(params)
    from carbonrun import settings as settings_mod

    st = settings_mod.resolve(flag_values(ctx, params))
    gate_id = str(uuidlib.uuid4())
    st.values["tags"] = {**st.tags, "gate": gate_id}
    argv = list(command)
    baseline = _load_baseline(params, st)
    warnings = _check_comparable(baseline, params, st, argv)
    _warm_up(argv, params["warmup"])
    records = _measure(argv, st, params["runs"])
    out = _judge(params, records, baseline, gate_id)
    out.warnings[:0] = warnings
    _write_outputs(out, params)
    return FAIL if out.failed else PASS


# -- steps -----------------------------------------------------------------------------------------

def _check_options(p: Dict[str, Any]) -> None:
    """Usage errors, before anything runs."""
    if p["baseline_path"] and p["against"]:
        raise CarbonrunError("give --baseline FILE or --against TAG=VALUE, not both", USAGE)
    if (p["update_baseline"] or p["update_baseline_on_improvement"]) and not p["baseline_path"]:
        raise CarbonrunError("--update-baseline needs --baseline FILE (the file to write)", USAGE)
    if not (p["baseline_path"] or p["against"] or p["max_kwh"] or p["max_kg"]):
        raise CarbonrunError("nothing to gate against: give --baseline FILE, --against TAG=VALUE, "
                             "or a budget (--max-kwh, --max-kg)", USAGE)
    if p["test_name"] == "welch" and p["runs"] < 2:
        raise CarbonrunError("--test welch needs --runs 2 or more", USAGE)


def _load_baseline(p: Dict[str, Any], st) -> Any:
    from carbonrun.gate import stats as core

    try:
        if p["baseline_path"] and not p["update_baseline"]:
            baseline = core.read_baseline(p["baseline_path"])
        elif p["against"]:
            baseline = _stored_baseline(p, st)
        else:
            return None
    except core.GateError as e:
        raise CarbonrunError(str(e), USAGE) from None
    if baseline.metric != p["metric"]:
        raise CarbonrunError(f"baseline {baseline.source} not comparable: it holds {baseline.metric}, not "
                             f"{p['metric']} (pass --metric {baseline.metric})", USAGE)
    if p["test_name"] == "welch" and len(baseline.samples) < 2:
        raise CarbonrunError(f"--test welch needs 2 or more baseline samples; {baseline.source} has 1", USAGE)
    return baseline


def _stored_baseline(p: Dict[str, Any], st) -> Any:
    """The last --against-limit completed runs with the tag, read before this gate stores any."""
    from carbonrun.gate import stats as core
    from carbonrun.measure.engine import open_store
    from carbonrun.store.sqlite import StoreError

    key, value = p["against"]
    store = open_store(st)
    try:
        records = store.query(tags={key: value}, status="completed", limit=p["against_limit"])
    except StoreError as e:
        raise core.GateError(f"no completed runs tagged {key}={value}: {e}") from None
    finally:
        store.close()
    if not records:
        raise core.GateError(f"no completed runs tagged {key}={value} in {store.path}: "
                             f"record some with `carbonrun gate --tag {key}={value} ...` first")
    return core.from_records(records, p["metric"], f"runs tagged {key}={value}")


def _check_comparable(baseline: Any, p: Dict[str, Any], st, argv: List[str]) -> List[str]:
    """Refuse (exit 2) a baseline from another machine class, meter set or settings, before running."""
    from carbonrun import __version__
    from carbonrun.gate import stats as core
    from carbonrun.measure.engine import prepare

    if baseline is None:
        return []
    probe = prepare(argv, st)  # discovers meters and host exactly as the measured runs will
    try:
        settings = {"attribution": st.attribution, "pue": st.pue}
        reasons = core.differences(baseline, probe.record["host"], core.meter_set(probe.found.meters), settings)
    finally:
        for m in probe.found.meters:
            m.close()
        probe.store.close()
    if reasons and not p["allow_different_host"]:
        raise CarbonrunError(f"baseline {baseline.source} not comparable: " + "; ".join(reasons)
                             + " (pass --allow-different-host to compare anyway)", USAGE)
    warnings = [f"compared across machines as asked: {r}" for r in reasons]
    if baseline.command and baseline.command != argv:
        warnings.append(f"the baseline measured another command: {_first_difference(baseline.command, argv)}")
    if baseline.carbonrun_version not in (__version__, "?"):
        warnings.append(f"the baseline was written by carbonrun {baseline.carbonrun_version}; "
                        f"this is {__version__}: estimates may differ")
    return warnings


def _warm_up(argv: List[str], count: int) -> None:
    """Unmeasured runs, spawned like measured ones (clean signal mask), not stored."""
    from carbonrun.measure.session import LaunchError, spawn

    for i in range(count):
        _progress(f"warm-up {i + 1}/{count}")
        try:
            pid = spawn(argv)
        except LaunchError as e:
            raise CarbonrunError(f"{e}: the gate cannot run it", COMMAND_FAILED) from None
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise CarbonrunError(f"warm-up run {i + 1} failed ({_exit_text(code)}): fix the command first",
                                 COMMAND_FAILED)


def _measure(argv: List[str], st, runs: int) -> List[dict]:
    """Measured, stored runs; the first failure stops the gate with exit 3."""
    from carbonrun.report import units
    from carbonrun.measure.engine import execute, prepare
    from carbonrun.measure.session import LaunchError

    records = []
    for i in range(runs):
        p = prepare(argv, st)
        try:
            record, outcome = execute(p, argv)
        except LaunchError as e:
            raise CarbonrunError(f"{e}: the gate cannot run it", COMMAND_FAILED) from None
        finally:
            p.store.close()
        if outcome.interrupted:
            raise CarbonrunError(f"interrupted during run {i + 1}/{runs} (run #{record['id']} kept)", 130)
        if outcome.exit_code != 0:
            raise CarbonrunError(f"run {i + 1}/{runs} failed ({_exit_text(outcome.exit_code)}; run #{record['id']}):"
                                 " the gate judges only commands that succeed", COMMAND_FAILED)
        _progress(f"run {i + 1}/{runs}: {units.energy(record['energy']['total_kwh'])} in "
                  f"{units.duration(record['duration_s'])} (run #{record['id']})")
        records.append(record)
    return records


def _judge(p: Dict[str, Any], records: List[dict], baseline: Any, gate_id: str) -> GateResult:
    from carbonrun.gate import stats as core

    samples = [core.metric_value(r, p["metric"]) for r in records]
    out = GateResult(p["metric"], samples, records, gate_id, baseline,
                  budgets=core.budgets(records, p["max_kwh"], p["max_kg"]))
    if baseline is not None:
        try:
            out.comparison = core.compare(baseline.samples, samples, p["max_increase"], p["test_name"],
                                          p["confidence"])
        except core.GateError as e:
            raise CarbonrunError(str(e), USAGE) from None
        out.warnings += out.comparison.warnings
    improved = out.comparison is not None and out.comparison.verdict == "improvement"
    if p["update_baseline"] or (improved and p["update_baseline_on_improvement"]):
        core.write_baseline(p["baseline_path"], core.from_records(records, p["metric"], p["baseline_path"]))
        out.written = p["baseline_path"]
    return out


# -- rendering -------------------------------------------------------------------------------------

def _progress(text: str) -> None:
    sys.stderr.write(f"carbonrun gate: {text}\n")
    sys.stderr.flush()


def _first_difference(was: List[str], now: List[str]) -> str:
    """Where two commands part, on one line (commands can be long scripts; newlines break Markdown)."""
    i = next((k for k, (a, b) in enumerate(zip(was, now)) if a != b), min(len(was), len(now)))
    pick = lambda argv: _short(argv[i]) if i < len(argv) else "(nothing)"  # noqa: E731
    return f"argument {i} was {pick(was)}, now {pick(now)}"


def _short(arg: str, width: int = 40) -> str:
    text = " ".join(shlex.quote(arg).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _exit_text(code: Optional[int]) -> str:
    if code is None:
        return "no exit status"
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def fmt(metric: str, x: float) -> str:
    from carbonrun.report import units

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
    if c is not None:
        p = None if c.test is None else c.test.p_greater if c.change_pct >= 0 else c.test.p_less
        p_text = f"p = {p:.3g}" if p is not None else "no test"
        thr = c.threshold_pct
        size = f"{abs(c.change_pct):.1f}%"
        if c.verdict == "regression":
            lines.append(f"the median {out.metric} rose {size}, beyond +{thr:g}%"
                         + (f", and the rise is significant ({p_text} < {c.alpha:.3g})" if c.test else ""))
        elif c.verdict == "improvement":
            lines.append(f"the median {out.metric} fell {size}, beyond -{thr:g}%"
                         + (f", and the fall is significant ({p_text} < {c.alpha:.3g})" if c.test else ""))
        elif abs(c.change_pct) <= thr:
            lines.append(f"the median {out.metric} changed {c.change_pct:+.1f}%, within ±{thr:g}%")
        else:
            lines.append(f"the median {out.metric} changed {c.change_pct:+.1f}%, beyond ±{thr:g}%, but not "
                         f"significantly ({p_text} ≥ {c.alpha:.3g}): it may be noise")
    for b in out.budgets:
        shown = fmt("energy" if b.name == "kwh" else "emissions", b.value)
        limit = fmt("energy" if b.name == "kwh" else "emissions", b.limit)
        lines.append(f"budget {limit}: the median run used {shown}" + (": EXCEEDED" if b.exceeded else ": ok"))
    if out.written:
        lines.append(f"baseline written to {out.written} ({len(out.samples)} samples): commit it")
    return lines


def _ci_text(c: Any) -> str:
    if c.ci_pct is None:
        return "CI needs more runs"
    return f"{1 - c.alpha:.0%} CI {c.ci_pct[0]:+.1f}% to {c.ci_pct[1]:+.1f}%"


def _test_text(c: Any) -> str:
    if c.test is None:
        return "none (threshold only)"
    df = f", df {c.test.df:.1f}" if c.test.df is not None else ""
    return (f"{c.test.name} ({c.test.method}{df}): one-sided p = {c.test.p_greater:.3g} for a rise, "
            f"{c.test.p_less:.3g} for a fall (alpha {c.alpha:.3g})")


def render_terminal(out: GateResult, color: bool) -> str:
    from carbonrun.gate import stats as core

    word = verdict_word(out)
    shade = {"regression": "red", "budget exceeded": "red", "improvement": "green"}.get(word, "cyan")
    head = click.style(word.upper(), fg=shade, bold=True) if color else word.upper()
    rows = [("baseline", core.summarize(out.baseline.samples))] if out.baseline is not None else []
    rows.append(("current", core.summarize(out.samples)))
    lines = [f"carbonrun gate: {out.metric}, {len(out.samples)} runs"
             + (f" against {out.baseline.source}" if out.baseline is not None else ""),
             f"  {'':9}{'runs':>5} {'median':>14} {'IQR':>14} {'CV':>7}"]
    for name, s in rows:
        lines.append(f"  {name:9}{s.n:>5} {fmt(out.metric, s.median):>14} {fmt(out.metric, s.iqr):>14} "
                     f"{100 * s.cv:>6.1f}%")
    c = out.comparison
    if c is not None:
        lines.append(f"  change   {c.change_pct:+.1f}% ({_ci_text(c)}, Hodges-Lehmann), "
                     f"threshold ±{c.threshold_pct:g}%")
        lines.append(f"  test     {_test_text(c)}")
    lines.append(f"  verdict  {head}: " + "; ".join(explain(out)))
    lines += [f"  warning: {w}" for w in out.warnings]
    return "\n".join(lines) + "\n"


def render_markdown(out: GateResult) -> str:
    from carbonrun.gate import stats as core

    word = verdict_word(out)
    lines = [f"### carbonrun gate: {out.metric}: **{word.upper()}**", "",
             "| | runs | median | IQR | CV |", "|---|---:|---:|---:|---:|"]
    if out.baseline is not None:
        s = core.summarize(out.baseline.samples)
        lines.append(f"| baseline ({out.baseline.source}) | {s.n} | {fmt(out.metric, s.median)} | "
                     f"{fmt(out.metric, s.iqr)} | {100 * s.cv:.1f}% |")
    s = core.summarize(out.samples)
    lines.append(f"| current | {s.n} | {fmt(out.metric, s.median)} | {fmt(out.metric, s.iqr)} | {100 * s.cv:.1f}% |")
    c = out.comparison
    if c is not None:
        lines.append(f"| change | | {c.change_pct:+.1f}% ({_ci_text(c)}) | | |")
    lines.append(f"| verdict | | **{word}** | | |")
    lines += ["", "; ".join(explain(out)) + "."]
    if c is not None:
        lines += ["", f"Test: {_test_text(c)}; threshold ±{c.threshold_pct:g}%."]
    lines += [f"> warning: {w}" for w in out.warnings]
    return "\n".join(lines) + "\n\n"


def result_json(out: GateResult) -> dict:
    from dataclasses import asdict

    from carbonrun.gate import stats as core

    c = out.comparison
    return {
        "schema": core.RESULT_SCHEMA, "verdict": verdict_word(out), "exit_code": FAIL if out.failed else PASS,
        "metric": out.metric, "unit": core.METRICS[out.metric][0], "gate": out.gate_id,
        "current": {**asdict(core.summarize(out.samples)), "samples": out.samples,
                    "runs": [r["id"] for r in out.records]},
        "baseline": None if out.baseline is None else {
            **asdict(core.summarize(out.baseline.samples)), "samples": out.baseline.samples,
            "source": out.baseline.source},
        "change_pct": c.change_pct if c else None,
        "ci_pct": list(c.ci_pct) if c and c.ci_pct else None,
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


def _write_outputs(out: GateResult, p: Dict[str, Any]) -> None:
    from carbonrun.cli.render import color_enabled

    sys.stderr.write(render_terminal(out, color_enabled(sys.stderr)))
    summary = p["summary_path"] or os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _write_file(summary, render_markdown(out), "a")
    if p["json_path"]:
        _write_file(p["json_path"], json.dumps(result_json(out), indent=2) + "\n", "w")


def _write_file(path: str, text: str, mode: str) -> None:
    try:
        with open(path, mode) as f:
            f.write(text)
    except OSError as e:
        sys.stderr.write(f"carbonrun: warning: cannot write {path}: {e.strerror}\n")
