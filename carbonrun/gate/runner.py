"""Run a gate: measure the command (and, for an A/B gate, the baseline command in turn), then judge.

The CLI parses the options into GateOptions and renders the GateResult; everything in between is
here. Each measured run goes through the same engine as `carbonrun run` (prepare, execute, store).
Progress goes to a callback; nothing here prints.
"""
from __future__ import annotations

import math
import os
import random
import shlex
import time
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from carbonrun import __version__, timefmt
from carbonrun.gate import paired, stats
from carbonrun.gate.result import GateResult, Paired, fmt
from carbonrun.gate.stats import GateError, Record
from carbonrun.settings import Settings
from carbonrun.measure.engine import execute, open_store, prepare
from carbonrun.store.base import StoreError
from carbonrun.gate.worktree import SetupFailed, worktree
from carbonrun.measure.session import LaunchError, spawn

Progress = Callable[[str], None]
UNPAIRED_TESTS = ("mannwhitney", "welch", "none")
PAIRED_TESTS = ("wilcoxon", "none")


class CommandFailed(Exception):
    """A warm-up, measured run or --setup failed or could not start: the gate exits 3."""


class Interrupted(Exception):
    """The user interrupted a measured run (it is kept in the store): the gate exits 130."""


@dataclass
class GateOptions:
    command: List[str]
    runs: int = 5  # measured runs; pairs for an A/B gate
    warmup: int = 1
    metric: Optional[str] = None  # None: energy, or "auto" for an A/B gate
    test: Optional[str] = None  # None: mannwhitney, or wilcoxon for an A/B gate
    max_increase: float = 5.0
    confidence: float = 0.95
    baseline_path: Optional[str] = None
    update_baseline: bool = False
    update_baseline_on_improvement: bool = False
    against: Optional[Tuple[str, str]] = None
    against_limit: int = 10
    max_kwh: Optional[float] = None
    max_kg: Optional[float] = None
    allow_different_host: bool = False
    vs: Optional[List[str]] = None  # the baseline command of an A/B gate
    vs_ref: Optional[str] = None  # or: the same command in a worktree of this git ref
    setup: Optional[str] = None  # shell command run in that worktree first
    max_runs: Optional[int] = None  # sequential: stop as soon as decided, at most this many pairs
    seed: Optional[int] = None  # the order of each pair

    @property
    def paired(self) -> bool:
        return self.vs is not None or self.vs_ref is not None


def check(o: GateOptions) -> None:
    """Usage errors (GateError, exit 2), before anything runs; fills in the defaults that depend on the mode."""
    if o.vs is not None and o.vs_ref is not None:
        raise GateError("give --vs 'COMMAND' or --vs-ref REF, not both")
    if o.paired:
        if o.vs is not None and not o.vs:
            raise GateError("--vs needs a command, e.g. --vs 'python bench_old.py'")
        clash = [name for name, given in (("--baseline", o.baseline_path), ("--against", o.against),
                                          ("--update-baseline", o.update_baseline or
                                           o.update_baseline_on_improvement)) if given]
        if clash:
            raise GateError(f"{clash[0]} does not go with --vs/--vs-ref: an A/B gate measures its baseline itself")
        o.test = o.test or "wilcoxon"
        if o.test not in PAIRED_TESTS:
            raise GateError(f"--test {o.test} compares independent samples; paired runs use --test wilcoxon or none")
        o.metric = o.metric or "auto"
        if o.max_runs is not None and o.max_runs < 2:
            raise GateError("--max-runs needs 2 pairs or more")
        return
    if o.setup:
        raise GateError("--setup goes with --vs-ref REF (it runs in the worktree of REF)")
    if o.max_runs is not None:
        raise GateError("--max-runs stops an A/B gate early: it needs --vs or --vs-ref")
    o.test = o.test or "mannwhitney"
    if o.test not in UNPAIRED_TESTS:
        raise GateError(f"--test {o.test} needs pairs: give --vs 'COMMAND' or --vs-ref REF")
    o.metric = o.metric or "energy"
    if o.metric == "auto":
        raise GateError("--metric auto needs pairs (--vs or --vs-ref); a baseline holds one metric")
    if o.baseline_path and o.against:
        raise GateError("give --baseline FILE or --against TAG=VALUE, not both")
    if (o.update_baseline or o.update_baseline_on_improvement) and not o.baseline_path:
        raise GateError("--update-baseline needs --baseline FILE (the file to write)")
    if not (o.baseline_path or o.against or o.max_kwh or o.max_kg):
        raise GateError("nothing to gate against: give --baseline FILE, --against TAG=VALUE, --vs 'COMMAND', "
                        "--vs-ref REF, or a budget (--max-kwh, --max-kg)")
    if o.test == "welch" and o.runs < 2:
        raise GateError("--test welch needs --runs 2 or more")


def run(o: GateOptions, st: Settings, progress: Progress) -> GateResult:
    """The whole gate. Raises GateError (usage), CommandFailed, Interrupted; CarbonrunError from the engine."""
    check(o)
    gate_id = str(uuidlib.uuid4())
    if o.paired:
        return _run_paired(o, st, gate_id, progress)
    st = _with_tags(st, {**st.tags, "gate": gate_id})
    baseline = _load_baseline(o, st)
    warnings = _check_comparable(baseline, o, st)
    _warm_up([(o.command, None, "")], o.warmup, progress)
    records = [_measure(o.command, st, f"run {i + 1}/{o.runs}", progress) for i in range(o.runs)]
    out = _judge(o, records, baseline, gate_id)
    out.warnings[:0] = warnings
    return out


# -- a baseline file or stored runs ----------------------------------------------------------------

def _load_baseline(o: GateOptions, st: Settings) -> Optional[stats.Baseline]:
    if o.baseline_path and not o.update_baseline:
        baseline = stats.read_baseline(o.baseline_path)
    elif o.against:
        baseline = _stored_baseline(o, st)
    else:
        return None
    if baseline.metric != o.metric:
        raise GateError(f"baseline {baseline.source} not comparable: it holds {baseline.metric}, not "
                        f"{o.metric} (pass --metric {baseline.metric})")
    if o.test == "welch" and len(baseline.samples) < 2:
        raise GateError(f"--test welch needs 2 or more baseline samples; {baseline.source} has 1")
    return baseline


def _stored_baseline(o: GateOptions, st: Settings) -> stats.Baseline:
    """The last --against-limit completed runs with the tag, read before this gate stores any."""
    assert o.against is not None
    key, value = o.against
    store = open_store(st)
    try:
        records = store.query(tags={key: value}, status="completed", limit=o.against_limit)
    except StoreError as e:
        raise GateError(f"no completed runs tagged {key}={value}: {e}") from None
    finally:
        store.close()
    if not records:
        raise GateError(f"no completed runs tagged {key}={value} in {store.where}: "
                        f"record some with `carbonrun gate --tag {key}={value} ...` first")
    return stats.from_records(records, o.metric or "energy", f"runs tagged {key}={value}")


def _check_comparable(baseline: Optional[stats.Baseline], o: GateOptions, st: Settings) -> List[str]:
    """Refuse a baseline from another machine class, meter set or settings, before running."""
    if baseline is None:
        return []
    probe = prepare(o.command, st)  # discovers meters and host exactly as the measured runs will
    try:
        settings = {"attribution": st.attribution, "pue": st.pue}
        reasons = stats.differences(baseline, probe.record["host"], stats.meter_set(probe.found.meters), settings)
    finally:
        for m in probe.found.meters:
            m.close()
        probe.store.close()
    if reasons and not o.allow_different_host:
        raise GateError(f"baseline {baseline.source} not comparable: " + "; ".join(reasons)
                        + " (pass --allow-different-host to compare anyway)")
    warnings = [f"compared across machines as asked: {r}" for r in reasons]
    if baseline.command and baseline.command != o.command:
        warnings.append(f"the baseline measured another command: {first_difference(baseline.command, o.command)}")
    if baseline.carbonrun_version not in (__version__, "?"):
        warnings.append(f"the baseline was written by carbonrun {baseline.carbonrun_version}; "
                        f"this is {__version__}: estimates may differ")
    return warnings


def _judge(o: GateOptions, records: List[Record], baseline: Optional[stats.Baseline], gate_id: str) -> GateResult:
    metric = o.metric or "energy"
    samples = [stats.metric_value(r, metric) for r in records]
    out = GateResult(metric, samples, records, gate_id, baseline,
                     budgets=stats.budgets(records, o.max_kwh, o.max_kg))
    if baseline is not None:
        out.comparison = stats.compare(baseline.samples, samples, o.max_increase, o.test or "mannwhitney",
                                       o.confidence)
        out.warnings += out.comparison.warnings
    improved = out.comparison is not None and out.comparison.verdict == "improvement"
    if o.baseline_path and (o.update_baseline or (improved and o.update_baseline_on_improvement)):
        stats.write_baseline(o.baseline_path, stats.from_records(records, metric, o.baseline_path))
        out.written = o.baseline_path
    return out


# -- an A/B gate: both commands in this job, alternating --------------------------------------------

def _run_paired(o: GateOptions, st: Settings, gate_id: str, progress: Progress) -> GateResult:
    st = _absolute_paths(st)
    current_st = _with_tags(st, {**st.tags, "gate": gate_id, "gate-side": "current"})
    base_st = _with_tags(st, {"gate": gate_id, "gate-side": "baseline"})
    if o.vs_ref is None:
        assert o.vs is not None
        return _pairs(o, o.vs, None, f"--vs {_one_line(o.vs)}", current_st, base_st, gate_id, progress, None)

    progress(f"checking out {o.vs_ref} in a temporary worktree")
    try:
        with worktree(o.vs_ref, os.getcwd(), o.setup, _run_setup) as wt:
            source = f"{o.vs_ref} ({wt.commit[:12]}, worktree)"
            return _pairs(o, o.command, wt.cwd, source, current_st, base_st, gate_id, progress,
                          (o.vs_ref, wt.commit))
    except SetupFailed as e:
        raise CommandFailed(str(e)) from None


@dataclass
class _Log:
    """What the pairs so far hold: the runs of each side, the order of each pair, the looks taken."""

    base: List[Record] = field(default_factory=list)
    cur: List[Record] = field(default_factory=list)
    order: List[str] = field(default_factory=list)
    looks: List[Dict[str, Any]] = field(default_factory=list)


def _pairs(o: GateOptions, base_argv: List[str], base_cwd: Optional[str], source: str, current_st: Settings,
           base_st: Settings, gate_id: str, progress: Progress, ref: Optional[Tuple[str, str]]) -> GateResult:
    """Warm up both commands, then run pairs (each in a seeded random order) until a look decides."""
    alpha = round(1.0 - o.confidence, 12)  # 1 - 0.95 is not 0.05 in binary (see stats.compare)
    plan = paired.sequential_plan(o.max_runs, alpha) if o.max_runs else paired.fixed_plan(o.runs, alpha)
    seed = o.seed if o.seed is not None else random.SystemRandom().randrange(2 ** 32)
    rng = random.Random(seed)
    sides = {"b": (base_argv, base_cwd, base_st, "baseline"), "c": (o.command, None, current_st, "current")}
    _warm_up([(base_argv, base_cwd, " of the baseline"), (o.command, None, " of the current command")],
             o.warmup, progress)
    log = _Log()
    for i in range(plan.max_pairs):
        log.order.append("bc" if rng.random() < 0.5 else "cb")
        for side in log.order[-1]:
            argv, cwd, side_st, name = sides[side]
            rec = _measure(argv, side_st, f"pair {i + 1}/{plan.max_pairs} ({name})", None, cwd)
            (log.base if side == "b" else log.cur).append(rec)
        progress(f"pair {i + 1}/{plan.max_pairs}: baseline {_brief(log.base[-1])}, current {_brief(log.cur[-1])}")
        if i + 1 in plan.looks:
            choice, d, look = _look(o, plan, log, progress)
            if look.verdict is not None:
                break
    metric = choice.chosen
    b_samples, c_samples = _values(log.base, metric), _values(log.cur, metric)
    comp = paired.comparison(b_samples, c_samples, d, look, o.max_increase, o.test or "wilcoxon",
                             len(plan.looks) > 1)
    last = log.base[-1]
    baseline = stats.Baseline(metric, b_samples, stats.fingerprint(last["host"]), stats.meter_set(last["components"]),
                              stats.settings_of(last), list(base_argv), __version__, _now(),
                              [r["uuid"] for r in log.base], source)
    info = Paired(source, list(base_argv), log.order, seed, plan, choice, d, log.looks,
                  ref[0] if ref else None, ref[1] if ref else None)
    out = GateResult(metric, c_samples, log.cur, gate_id, baseline, comp,
                     stats.budgets(log.cur, o.max_kwh, o.max_kg), paired=info, baseline_records=log.base)
    out.warnings += comp.warnings
    return out


def _look(o: GateOptions, plan: paired.Plan, log: _Log, progress: Progress
          ) -> Tuple[paired.MetricChoice, List[float], paired.Look]:
    """Judge the pairs so far at the error rate this look may spend (the last look decides anyway)."""
    n = len(log.cur)
    k = plan.looks.index(n)
    choice = _choose(o.metric or "auto", log.base, log.cur)
    d = paired.log_ratios(_values(log.base, choice.chosen), _values(log.cur, choice.chosen))
    look = paired.judge(d, o.max_increase, plan.alphas[k], o.test or "wilcoxon", final=n == plan.max_pairs)
    change = 100.0 * math.expm1(look.estimate)
    log.looks.append({"pairs": n, "alpha": plan.alphas[k], "metric": choice.chosen, "change_pct": change,
                      "verdict": look.verdict})
    if len(plan.looks) > 1:
        progress(f"look {k + 1}/{len(plan.looks)} after {n} pairs: {choice.chosen} {change:+.1f}%, "
                 + (look.verdict or "undecided, running more pairs"))
    return choice, d, look


def _choose(metric: str, base: Sequence[Record], cur: Sequence[Record]) -> paired.MetricChoice:
    """--metric auto: the candidate with the tightest paired spread; otherwise the metric asked for."""
    names = list(paired.CHOICES) + ([metric] if metric not in paired.CHOICES and metric != "auto" else [])
    candidates = {name: (_values(base, name), _values(cur, name)) for name in names}
    try:
        best = paired.choose_metric(candidates)
    except ValueError:
        best = None
    if metric == "auto":
        if best is None:
            raise GateError("no metric was usable (energy, cpu-energy, cpu-time all zero or too coarse in some "
                            "run): the command does too little to compare")
        return best
    b, c = candidates[metric]
    if not all(x > 0 for x in list(b) + list(c)):
        raise GateError(f"{metric} was zero in some run: a ratio cannot be formed (try --metric auto)")
    spreads = best.spreads if best is not None else {}
    spreads.setdefault(metric, paired.paired_spread(paired.log_ratios(b, c)))
    return paired.MetricChoice(metric, spreads, auto=False)


def _values(records: Sequence[Record], metric: str) -> List[float]:
    return [stats.metric_value(r, metric) for r in records]


def _brief(record: Record) -> str:
    return f"{fmt('energy', record['energy']['total_kwh'])} in {record['duration_s']:.2f} s"


# -- running commands ------------------------------------------------------------------------------

@contextmanager
def _inside(path: Optional[str]) -> Iterator[None]:
    """Run in `path` (the worktree) for the span of one spawn: posix_spawn takes no working directory."""
    if path is None:
        yield
        return
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


def _spawn_and_wait(argv: List[str], cwd: Optional[str], what: str) -> int:
    """Run an unmeasured command (a warm-up, --setup) the way measured ones are spawned; its exit code."""
    try:
        with _inside(cwd):
            pid = spawn(argv)
    except LaunchError as e:
        raise CommandFailed(f"{e}: {what}") from None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _run_setup(argv: List[str], cwd: str) -> int:
    return _spawn_and_wait(argv, cwd, "--setup cannot start")


def _warm_up(commands: Sequence[Tuple[List[str], Optional[str], str]], count: int, progress: Progress) -> None:
    """Unmeasured runs (argv, working directory, name in messages), not stored."""
    for i in range(count):
        progress(f"warm-up {i + 1}/{count}")
        for argv, cwd, name in commands:
            code = _spawn_and_wait(argv, cwd, "the gate cannot run it")
            if code != 0:
                raise CommandFailed(f"warm-up run {i + 1}{name} failed ({exit_text(code)}): fix the command first")


def _measure(argv: List[str], st: Settings, label: str, progress: Optional[Progress],
             cwd: Optional[str] = None) -> Record:
    """One measured, stored run; a failure stops the gate (exit 3)."""
    p = prepare(argv, st)
    try:
        with _inside(cwd):
            record, outcome = execute(p, argv)
    except LaunchError as e:
        raise CommandFailed(f"{e}: the gate cannot run it") from None
    finally:
        p.store.close()
    if outcome.interrupted:
        raise Interrupted(f"interrupted during {label} (run #{record['id']} kept)")
    if outcome.exit_code != 0:
        raise CommandFailed(f"{label} failed ({exit_text(outcome.exit_code)}; run #{record['id']}):"
                            " the gate judges only commands that succeed")
    if progress is not None:
        progress(f"{label}: {_brief(record)} (run #{record['id']})")
    return record


def exit_text(code: Optional[int]) -> str:
    if code is None:
        return "no exit status"
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


def _one_line(argv: Sequence[str], width: int = 60) -> str:
    """A command on one line, shortened: commands can be long scripts, and newlines break Markdown."""
    from carbonrun.sanitize import terminal  # a committed baseline's command must not drive the terminal

    text = terminal(" ".join(" ".join(shlex.quote(a) for a in argv).split()))
    return text if len(text) <= width else text[:width - 1] + "…"


def first_difference(was: List[str], now: List[str]) -> str:
    """Where two commands part, on one line."""
    i = next((k for k, (a, b) in enumerate(zip(was, now)) if a != b), min(len(was), len(now)))
    return f"argument {i} was {_one_line(was[i:i + 1], 40) if i < len(was) else '(nothing)'}, " \
           f"now {_one_line(now[i:i + 1], 40) if i < len(now) else '(nothing)'}"


# -- settings --------------------------------------------------------------------------------------

def _with_tags(st: Settings, tags: Dict[str, str]) -> Settings:
    return Settings(dict(st.values, tags=tags), dict(st.sources))


def _absolute_paths(st: Settings) -> Settings:
    """Paths the engine opens during a run, made absolute: baseline runs happen inside the worktree."""
    values = dict(st.values)
    for key in ("store", "prometheus_textfile", "intensity_file", "proc_root", "rapl_root"):
        v = values.get(key)
        if isinstance(v, str) and v and "://" not in v and v.strip().lower() != "none":
            values[key] = os.path.abspath(v)
    return Settings(values, dict(st.sources))


def _now() -> str:
    return timefmt.iso(time.time())
