"""How often the A/B gate (`carbonrun gate --vs`) is right on this machine: false alarms and detection.

Each gate compares a CPU loop whose work this script controls with the same loop doing +0%, +5%,
+10% or +15% more work, through the real CLI (a subprocess per gate, its own store), in two
designs: a fixed `--runs 8` pairs and sequential stopping (`--max-runs 20`), both with
`--max-increase 5` and the default `--metric auto` and `--test wilcoxon`; and, for comparison, the
baseline-file gate (`--baseline FILE --runs 8 --max-increase 5`, energy, Mann-Whitney) against a file
of 8 runs written when the script starts. "+X% work" is of the whole
command: the loop gets enough extra iterations to cover X% of the interpreter's start-up too
(measured first). The cells are run round-robin, so a change in the neighbours' load falls on
all of them alike.

    .venv/bin/python benchmarks/gate_power.py [--gates 20] [--effects 0,5,10,15] [--designs fixed,sequential,file]
                                              [--loop-s 0.15] [--time-limit S] [--out results.json]

Prints one line per gate, then the table (also on --time-limit or Ctrl-C: the partial figures).
The done-when targets: at most 1 false alarm in 10 gates of identical commands; +15% caught in at
least 8 of 10 with 8 pairs.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = {"fixed": ["--runs", "8"], "sequential": ["--max-runs", "20"], "file": ["--runs", "8"]}
LABELS = {"fixed": "A/B, 8 pairs (`--runs 8`)", "sequential": "A/B, sequential (`--max-runs 20`)",
          "file": "baseline file (8 runs, written at the start)"}
LOOP = "i = 0\nwhile i < {n}: i += 1"


def child_cpu(argv: List[str]) -> float:
    """CPU seconds of one run of argv (this process's children's rusage before and after)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def calibrate(loop_s: float) -> Tuple[int, float, float]:
    """Iterations for a loop of about loop_s CPU seconds, the start-up CPU, and seconds per iteration."""
    py = [sys.executable, "-S", "-c"]
    startup = statistics.median(child_cpu(py + ["pass"]) for _ in range(7))
    probe = 1_000_000
    per_iter = max(1e-9, (statistics.median(child_cpu(py + [LOOP.format(n=probe)]) for _ in range(5)) - startup)
                   / probe)
    return int(loop_s / per_iter), startup, per_iter


def command(n: int, effect_pct: float, startup: float, per_iter: float) -> List[str]:
    """The loop with effect_pct more work than n iterations plus start-up."""
    extra = effect_pct / 100.0 * (n + startup / per_iter)
    return [sys.executable, "-S", "-c", LOOP.format(n=int(round(n + extra)))]


def gate(args: List[str], home: Path) -> Tuple[Dict[str, Any], float]:
    """`carbonrun gate ARGS` in its own store under home; its JSON result and wall time."""
    out = home / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARBONRUN_", "GITHUB_"))}
    env.update(PYTHONPATH=str(ROOT), CARBONRUN_HOME=str(home / "store"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"), NO_COLOR="1")
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "carbonrun", "gate", "--json", str(out), *args], env=env,
                       capture_output=True, text=True, cwd=home)
    wall = time.monotonic() - start
    if p.returncode not in (0, 1):
        raise SystemExit(f"gate failed (exit {p.returncode}):\n{p.stderr}")
    return json.loads(out.read_text()), wall


def one_gate(design: str, base: List[str], cur: List[str], home: Path, seed: int, baseline_file: Path
             ) -> Dict[str, Any]:
    common = [*DESIGNS[design], "--max-increase", "5"]
    if design == "file":
        r, wall = gate([*common, "--baseline", str(baseline_file), "--", *cur], home)
        return {"verdict": r["verdict"], "pairs": r["current"]["n"], "metric": r["metric"], "wall_s": wall,
                "change_pct": r["change_pct"], "cpu_ratio": None}
    r, wall = gate([*common, "--vs", " ".join(_quote(a) for a in base), "--seed", str(seed), "--", *cur], home)
    cpu_ratio = statistics.median(
        c["usage"]["job_cpu_s"] / b["usage"]["job_cpu_s"] for b, c in zip(*_usage(home, r["gate"])))
    return {"verdict": r["verdict"], "pairs": r["pairs"]["n"], "metric": r["metric"], "wall_s": wall,
            "change_pct": r["change_pct"], "cpu_ratio": cpu_ratio}


def _usage(home: Path, gate: str) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The gate's stored runs per side, in pair order (by start time)."""
    sys.path.insert(0, str(ROOT))
    from carbonrun.store.sqlite import Store

    runs = sorted(Store(home / "store" / "runs.sqlite").query(tags={"gate": gate}),
                  key=lambda r: r.get("started_at") or "")
    side = lambda s: [r for r in runs if r["tags"].get("gate-side") == s]  # noqa: E731
    return side("baseline"), side("current")


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def table(results: Dict[Tuple[str, int], List[Dict[str, Any]]], effects: List[int], designs: List[str]) -> str:
    head = "| design | " + " | ".join(f"+{e}% work" for e in effects) + " |"
    lines = [head, "|---|" + "---:|" * len(effects)]
    for d in designs:
        cells = []
        for e in effects:
            rs = results.get((d, e), [])
            if not rs:
                cells.append("-")
                continue
            reg = sum(1 for r in rs if r["verdict"] == "regression")
            pairs = statistics.mean(r["pairs"] for r in rs)
            cells.append(f"{reg}/{len(rs)} ({100 * reg / len(rs):.0f}%), {pairs:.1f} pairs")
        lines.append(f"| {LABELS[d]} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Cells: gates that failed with a regression / gates run, and the mean pairs (runs, for the file)"
                 " measured per gate.")
    for e in effects:
        rs = [r for d in designs if d != "file" for r in results.get((d, e), [])]
        if rs:
            metrics: Dict[str, int] = {}
            for r in rs:
                metrics[r["metric"]] = metrics.get(r["metric"], 0) + 1
            lines.append(f"+{e}%: measured CPU-time ratio (median over gates) "
                         f"{statistics.median(r['cpu_ratio'] for r in rs):.3f}; metric chosen "
                         + ", ".join(f"{k} {v}x" for k, v in sorted(metrics.items()))
                         + f"; {statistics.mean(r['wall_s'] for r in rs):.1f} s per gate")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gates", type=int, default=20, help="gates per cell")
    ap.add_argument("--effects", default="0,5,10,15", help="extra work in %%, comma-separated")
    ap.add_argument("--designs", default="fixed,sequential,file")
    ap.add_argument("--loop-s", type=float, default=0.15, help="CPU seconds of the baseline loop")
    ap.add_argument("--time-limit", type=float, default=None, help="start no gate after this many seconds")
    ap.add_argument("--out", default=None, help="write every gate's result as JSON here")
    a = ap.parse_args()
    effects = [int(x) for x in a.effects.split(",")]
    designs = a.designs.split(",")
    n, startup, per_iter = calibrate(a.loop_s)
    print(f"loop: {n} iterations ({per_iter * 1e9:.1f} ns each), interpreter start-up {startup * 1000:.1f} ms CPU;"
          f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    results: Dict[Tuple[str, int], List[Dict[str, Any]]] = {}
    t0 = time.monotonic()
    base = command(n, 0, startup, per_iter)
    keep = tempfile.TemporaryDirectory(prefix="gate-power-baseline-")
    baseline_file = Path(keep.name) / "baseline.json"
    if "file" in designs:
        gate(["--baseline", str(baseline_file), "--update-baseline", "--runs", "8", "--", *base], Path(keep.name))
        print(f"baseline file written ({time.monotonic() - t0:.0f} s)", flush=True)
    try:
        for g in range(a.gates):
            for d in designs:
                for e in effects:
                    if a.time_limit and time.monotonic() - t0 > a.time_limit:
                        raise TimeoutError
                    with tempfile.TemporaryDirectory(prefix="gate-power-") as tmp:
                        r = one_gate(d, base, command(n, e, startup, per_iter), Path(tmp), 1000 * g + e,
                                     baseline_file)
                    results.setdefault((d, e), []).append(r)
                    ratio = f"{r['cpu_ratio']:.3f}" if r["cpu_ratio"] is not None else "-"
                    print(f"gate {g + 1}/{a.gates} {d:10} +{e:2}%: {r['verdict']:10} after {r['pairs']:2} pairs, "
                          f"{r['metric']:10} {r['change_pct']:+6.1f}%, cpu ratio {ratio}, "
                          f"{r['wall_s']:.1f} s", flush=True)
                    if a.out:
                        Path(a.out).write_text(json.dumps({f"{k[0]} +{k[1]}": v for k, v in results.items()},
                                                          indent=1))
    except (TimeoutError, KeyboardInterrupt):
        print("stopped early: partial figures", flush=True)
    print(f"\n{time.monotonic() - t0:.0f} s in all; load average {os.getloadavg()[0]:.1f}\n")
    print(table(results, effects, designs))
    keep.cleanup()


if __name__ == "__main__":
    main()
