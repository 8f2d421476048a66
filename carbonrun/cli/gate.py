"""`carbonrun gate`: the CI energy-regression gate's options, rendering and exit codes.

What it runs and how it judges lives in carbonrun/gate/ (runner.py, stats.py, paired.py, result.py).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any, Dict, Optional, Tuple

import click

from carbonrun.cli.numbers import FiniteRange
from carbonrun.cli.run import flag_values, run_options
from carbonrun.errors import CarbonrunError
from carbonrun.gate.result import (COMMAND_FAILED, FAIL, PASS, USAGE, GateResult, explain, fmt, metric_text, to_json,
                                   verdict_word)
from carbonrun.validate import number, Range
from carbonrun.gate import runner, stats as core
from carbonrun.gate.stats import GateError
from carbonrun.measure.session import block_signals
from carbonrun import files, settings as settings_mod
from carbonrun.cli.render import color_enabled

__all__ = ["gate", "PASS", "FAIL", "USAGE", "COMMAND_FAILED", "GateResult", "explain", "fmt", "verdict_word"]


def _percent(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[float]:
    if value is None:
        return None

    try:
        x = number(str(value).strip().rstrip("%"), Range(None, 1e6))
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


def _command_line(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list]:
    if value is None:
        return None
    try:
        return shlex.split(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not a command line: {e}") from None


@click.command(context_settings={"allow_interspersed_args": False},
               epilog="Examples:\n\n"
                      "  carbonrun gate --vs-ref origin/main --max-runs 20 -- python bench.py\n\n"
                      "  carbonrun gate --vs 'python bench_old.py' --runs 8 -- python bench.py\n\n"
                      "  carbonrun gate --baseline .carbonrun/baseline.json --update-baseline -- python bench.py\n\n"
                      "  carbonrun gate --baseline .carbonrun/baseline.json -- python bench.py\n\n"
                      "  carbonrun gate --tag branch=feature --against branch=main --runs 7 -- make bench\n\n"
                      "  carbonrun gate --max-kwh 0.5 -- python train.py --epochs 1")
@run_options
@click.option("--vs", "vs", metavar="'COMMAND'", callback=_command_line,
              help="A/B gate: run this baseline command in turn with COMMAND, in pairs, and compare pair by pair.")
@click.option("--vs-ref", metavar="REF",
              help="A/B gate against the same COMMAND in a temporary git worktree of REF (e.g. origin/main).")
@click.option("--setup", metavar="'CMD'", help="Shell command run in the worktree of --vs-ref first (e.g. a build).")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True,
              help="Measured runs (pairs for --vs/--vs-ref).")
@click.option("--max-runs", type=click.IntRange(2), metavar="N",
              help="A/B gate: stop as soon as the verdict is decided, after at most N pairs.")
@click.option("--seed", type=click.IntRange(0), help="Seed for the order within each pair (default: random, shown).")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True,
              help="Unmeasured runs first (caches, JIT, page cache); of both commands in an A/B gate.")
@click.option("--metric", type=click.Choice(["auto", "energy", "emissions", "cpu-energy", "cpu-time", "duration"]),
              help="energy = total kWh; cpu-energy = the job's CPU joules; cpu-time = the job's CPU seconds; "
                   "emissions = kg CO2eq; auto = the tightest paired spread of energy, cpu-energy, cpu-time. "
                   "[default: auto for an A/B gate, else energy]")
@click.option("--baseline", "baseline_path", metavar="FILE", help="JSON baseline committed to the repository.")
@click.option("--update-baseline", is_flag=True, help="Write FILE from these runs instead of comparing.")
@click.option("--update-baseline-on-improvement", is_flag=True,
              help="Rewrite FILE from these runs when they are a significant improvement.")
@click.option("--against", metavar="TAG=VALUE", callback=_tag_pair,
              help="Compare with the last stored runs carrying this tag (e.g. branch=main).")
@click.option("--against-limit", type=click.IntRange(1), default=10, show_default=True,
              help="How many stored runs --against takes.")
@click.option("--max-increase", metavar="PCT", default="5", callback=_percent, show_default=True,
              help="Increase (in %) beyond which a significant rise is a regression.")
@click.option("--test", "test_name", type=click.Choice(["mannwhitney", "welch", "wilcoxon", "none"]),
              help="One-sided significance test; none = the threshold alone. "
                   "[default: wilcoxon (signed-rank) for an A/B gate, else mannwhitney]")
@click.option("--confidence", type=FiniteRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the test and of the interval.")
@click.option("--max-kwh", type=FiniteRange(0.0, min_open=True), help="Budget: the median run's kWh.")
@click.option("--max-kg", type=FiniteRange(0.0, min_open=True), help="Budget: the median run's kg CO2eq.")
@click.option("--allow-different-host", is_flag=True,
              help="Compare even when host, meters or settings differ from the baseline's.")
@click.option("--summary", "summary_path", metavar="FILE",
              help="Append the Markdown summary to FILE (default: $GITHUB_STEP_SUMMARY when set).")
@click.option("--json", "json_path", metavar="FILE", help="Write the result as JSON to FILE.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def gate(ctx: click.Context, /, command: Tuple[str, ...], **params: Any) -> int:
    """CI energy-regression gate: run COMMAND and compare with a baseline.

    The baseline is a file (--baseline), stored runs (--against), or, best on a shared machine,
    measured in the same job: another command (--vs) or the same one at a git ref (--vs-ref),
    run in alternating pairs and judged pair by pair. A regression needs both: a rise beyond
    --max-increase, and a one-sided test that says the rise is not noise. Exit codes: 0 pass (no
    change or improvement), 1 regression or budget exceeded, 2 usage error (missing or corrupt
    baseline, not comparable), 3 COMMAND (or the baseline command, or --setup) failed.
    """
    block_signals()  # before anything could start a thread: signals are taken with sigtimedwait
    if params["max_runs"] is not None and ctx.get_parameter_source("runs") == click.core.ParameterSource.COMMANDLINE:
        raise CarbonrunError("give --runs N (a fixed number of pairs) or --max-runs N (stop when decided), not both",
                             USAGE)
    opts = runner.GateOptions(
        command=list(command), runs=params["runs"], warmup=params["warmup"], metric=params["metric"],
        test=params["test_name"], max_increase=params["max_increase"], confidence=params["confidence"],
        baseline_path=params["baseline_path"], update_baseline=params["update_baseline"],
        update_baseline_on_improvement=params["update_baseline_on_improvement"], against=params["against"],
        against_limit=params["against_limit"], max_kwh=params["max_kwh"], max_kg=params["max_kg"],
        allow_different_host=params["allow_different_host"], vs=params["vs"], vs_ref=params["vs_ref"],
        setup=params["setup"], max_runs=params["max_runs"], seed=params["seed"])
    try:
        runner.check(opts)  # usage errors before settings are resolved or anything runs

        st = settings_mod.resolve(flag_values(ctx, params))
        out = runner.run(opts, st, _progress)
    except GateError as e:
        raise CarbonrunError(str(e), USAGE) from None
    except runner.CommandFailed as e:
        raise CarbonrunError(str(e), COMMAND_FAILED) from None
    except runner.Interrupted as e:
        raise CarbonrunError(str(e), 130) from None
    _write_outputs(out, params)
    return out.exit_code


# -- rendering -------------------------------------------------------------------------------------

def _progress(text: str) -> None:
    sys.stderr.write(f"carbonrun gate: {text}\n")
    sys.stderr.flush()


def _ci_text(c: Any) -> str:
    if c.ci_pct is None:
        return "CI needs more runs"
    level = c.ci_level if c.ci_level is not None else 1 - c.alpha
    return f"{100 * level:.3g}% CI {c.ci_pct[0]:+.1f}% to {c.ci_pct[1]:+.1f}%"


def _test_text(c: Any) -> str:
    if c.test is None:
        return "none (threshold only)"
    df = f", df {c.test.df:.1f}" if c.test.df is not None else ""
    return (f"{c.test.name} ({c.test.method}{df}): one-sided p = {c.test.p_greater:.3g} for a rise, "
            f"{c.test.p_less:.3g} for a fall (alpha {c.alpha:.3g})")


def _pairs_text(out: GateResult) -> str:
    pr = out.paired
    assert pr is not None
    first = sum(1 for o in pr.order if o == "bc")
    text = (f"{len(pr.log_ratios)}, each in random order (baseline first in {first}; --seed {pr.seed} repeats it)")
    if pr.sequential:
        looks = ", ".join(str(n) for n in pr.plan.looks)
        text += (f"; sequential: looks after {looks} pairs, one-sided error rates "
                 + "/".join(f"{a:.3g}" for a in pr.plan.alphas) + f" (at most {sum(pr.plan.alphas):.3g} in all)")
    return text


def render_terminal(out: GateResult, color: bool) -> str:
    word = verdict_word(out)
    shade = {"regression": "red", "budget exceeded": "red", "improvement": "green"}.get(word, "cyan")
    head = click.style(word.upper(), fg=shade, bold=True) if color else word.upper()
    rows = [("baseline", core.summarize(out.baseline.samples))] if out.baseline is not None else []
    rows.append(("current", core.summarize(out.samples)))
    unit = "pairs" if out.paired else "runs"
    lines = [f"carbonrun gate: {out.metric}, {len(out.samples)} {unit}"
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
    if out.paired is not None:
        lines.append(f"  metric   {metric_text(out.paired.choice)}")
        lines.append(f"  pairs    {_pairs_text(out)}")
    lines.append(f"  verdict  {head}: " + "; ".join(explain(out)))
    lines += [f"  warning: {w}" for w in out.warnings]
    return "\n".join(lines) + "\n"


def render_markdown(out: GateResult) -> str:
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
    if out.paired is not None:
        lines += ["", f"Metric: {metric_text(out.paired.choice)}.", "", f"Pairs: {_pairs_text(out)}."]
    lines += [f"> warning: {w}" for w in out.warnings]
    return "\n".join(lines) + "\n\n"


def _write_outputs(out: GateResult, p: Dict[str, Any]) -> None:
    sys.stderr.write(render_terminal(out, color_enabled(sys.stderr)))
    summary = p["summary_path"] or os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        _write_file(summary, render_markdown(out), "a")
    if p["json_path"]:
        _write_file(p["json_path"], json.dumps(to_json(out), indent=2) + "\n", "w")


def _write_file(path: str, text: str, mode: str) -> None:
    """mode "w" replaces atomically; "a" appends (GITHUB_STEP_SUMMARY is the runner's file, shared by steps)."""
    try:
        if mode == "w":
            files.write_atomic(path, text)
        else:
            files.append_text(path, text)
    except OSError as e:
        sys.stderr.write(f"carbonrun: warning: cannot write {path}: {e.strerror}\n")
