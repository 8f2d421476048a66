"""How fast the store answers on many runs: `report last` (target: well under 0.5 s at 10,000 runs)
and `history --limit 0` (target: under 1 s at 100,000 runs).

Builds a temporary store of realistic records through the store's own code (most runs short, some
hours long with a full 2000-point timeline), then times the real CLI as a subprocess: median of
several runs, so the figure includes Python's start-up and imports, as a user sees it.

    .venv/bin/python benchmarks/store_bench.py [--runs 10000] [--repeat 7] [--keep DIR]
    .venv/bin/python benchmarks/store_bench.py --runs 100000 --repeat 5 --keep /tmp/bench100k
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from carbonrun.store.sqlite import SqliteStore  # noqa: E402

TARGET_S = 0.5
HISTORY_TARGET_S, HISTORY_AT = 1.0, 100_000
COMMANDS = [["python", "train.py", "--epochs", "3"], ["make", "test"], ["pytest", "-q"],
            ["python", "-m", "bench", "--size", "large"], ["./run_sim", "--steps", "100000"]]


def timeline(duration: float, points: int, rng: random.Random) -> dict:
    t = [round(duration * (i + 1) / points, 3) for i in range(points)]
    cpu = [round(40 + 25 * math.sin(i / 17) + rng.random() * 5, 3) for i in range(points)]
    return {"t": t, "watts": {"cpu": cpu, "dram": [round(4 + rng.random(), 3) for _ in range(points)],
                              "gpu": [round(180 + 60 * rng.random(), 3) for _ in range(points)]}}


_TIMELINES: dict = {}


def record(i: int, started: float, rng: random.Random) -> dict:
    """A completed run shaped like what the runner stores (three components, full timeline)."""
    long_run = rng.random() < 0.1
    duration = rng.uniform(3600, 36000) if long_run else rng.uniform(1, 600)
    points = 2000 if long_run else min(2000, max(2, int(duration / 0.5)))
    comps = [("cpu", "package-0", "rapl", 45.0), ("dram", "dram", "rapl", 4.5), ("gpu", "0", "nvml-energy", 210.0)]
    components = [{"component": c, "device": d, "source": s, "estimated": False, "counted": True,
                   "machine_j": round(w * duration, 3), "job_j": round(w * duration * 0.8, 3),
                   "low_j": round(w * duration * 0.8, 3), "high_j": round(w * duration * 0.8, 3)}
                  for c, d, s, w in comps]
    kwh = sum(c["job_j"] for c in components) / 3.6e6
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started))
    return {
        "schema": "carbonrun.run/1", "id": None, "uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "command": rng.choice(COMMANDS), "cwd": "/home/user/project", "tags": {"exp": f"e{i % 50}"},
        "host": {"name": "bench", "platform": "Linux-6.1-x86_64", "cpu_model": "AMD EPYC 7543", "cpu_threads": 64,
                 "memory_gb": 256.0, "gpus": [{"index": 0, "name": "NVIDIA A100", "uuid": "GPU-0"}],
                 "virtualised": False},
        "started_at": iso, "ended_at": iso, "duration_s": round(duration, 3), "status": "completed",
        "exit_code": 0, "attribution": "process", "interval_s": 0.1, "samples": int(duration * 10),
        "components": components,
        "usage": {"job_cpu_s": duration * 0.9, "machine_busy_cpu_s": duration, "peak_rss_bytes": 2**31},
        "energy": {"machine_kwh": kwh / 0.8, "job_kwh": kwh, "pue": 1.0, "total_kwh": kwh},
        "intensity": {"g_per_kwh": 56.0, "region": "FR", "source": "table:country", "how": "annual average",
                      "time_varying": False},
        "emissions": {"kg": kwh * 0.056, "low_kg": kwh * 0.056, "high_kg": kwh * 0.056},
        "social_cost_usd": {"low": 0.0, "central": 0.0, "high": 0.0, "basis": "US EPA (Dec 2023)"},
        "timeline": _TIMELINES.setdefault((points, i % 16), timeline(duration, points, rng)),  # shared: quick
        "notes": [], "carbonrun_version": "0.1.0",
    }


def build(path: Path, n: int, keep_timeline: bool = False) -> None:
    """Insert n runs through the store's own begin (its schema, its summary columns), in batches."""
    rng = random.Random(5)
    store = SqliteStore(path)
    store.keep_timeline = keep_timeline
    start = time.time() - n * 600
    for first in range(0, n, 5000):
        with store.bulk():
            for i in range(first, min(n, first + 5000)):
                store.begin(record(i, start + i * 600, rng), start + i * 600)
    store.close()


def timed(argv: List[str], repeat: int) -> Tuple[List[float], List[float]]:
    """Wall and CPU (user + system) seconds of each run: on a busy machine the CPU time varies less."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    wall, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, env=env)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(argv)}: {p.stderr.decode().strip()}")
    return wall, cpu


def history_split(path: Path, repeat: int) -> Dict[str, float]:
    """Where `history --limit 0` spends its time, in this process (best of `repeat`, collector off as in
    the command): the store query (Summary rows), the cells (figures, units, command lines), the layout."""
    from carbonrun.cli.history import history_rows, history_text

    store = SqliteStore(path)
    best = {"query": math.inf, "cells": math.inf, "layout": math.inf}
    gc.disable()
    for _ in range(repeat):
        t0 = time.perf_counter()
        records = store.summaries()
        t1 = time.perf_counter()
        rows = history_rows(records)
        t2 = time.perf_counter()
        history_text(rows, False, 0)
        t3 = time.perf_counter()
        for part, seconds in zip(best, (t1 - t0, t2 - t1, t3 - t2)):
            best[part] = min(best[part], seconds)
        del records, rows
    gc.enable()
    store.close()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", metavar="DIR", help="build the store in DIR and keep it")
    ap.add_argument("--keep-timeline", action="store_true", help="store full timelines (as --keep-timeline)")
    a = ap.parse_args()
    d = Path(a.keep or tempfile.mkdtemp(prefix="carbonrun-bench-"))
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = d / "runs.sqlite"
    t0 = time.perf_counter()
    if not (a.keep and path.exists() and SqliteStore(path).count() == a.runs):  # --keep: build once
        for f in d.glob("runs.sqlite*"):
            f.unlink()
        build(path, a.runs, a.keep_timeline)
    st = SqliteStore(path)
    summary_b = st.execute("SELECT sum(length(uuid) + length(started_at) + length(command) + length(tags)"
                           " + length(owner) + 48) FROM runs")[0][0] / a.runs
    record_b = st.execute("SELECT avg(length(record)), avg(coalesce(length(timeline), 0)) FROM records")[0]
    st.close()
    print(f"store: {a.runs:,} runs, {path.stat().st_size / 2**20:.0f} MiB, ready in {time.perf_counter() - t0:.1f} s;"
          f" per run: summary row ~{summary_b:.0f} B (what history reads), record {record_b[0]:.0f} B,"
          f" timeline {record_b[1]:.0f} B")
    base = [sys.executable, "-m", "carbonrun"]
    cases = {
        "python -c pass (start-up floor)": [sys.executable, "-c", "pass"],
        "carbonrun report last": base + ["report", "last", "--store", str(path)],
        "carbonrun report last --format json": base + ["report", "last", "--format", "json", "--store", str(path)],
        "carbonrun history": base + ["history", "--store", str(path)],
        "carbonrun history --status failed": base + ["history", "--status", "failed", "--store", str(path)],
        "carbonrun history --limit 0": base + ["history", "--limit", "0", "--store", str(path)],
        "carbonrun history --limit 0 -f csv": base + ["history", "--limit", "0", "-f", "csv", "--store", str(path)],
    }
    medians = {}
    for name, argv in cases.items():
        times, cpu = timed(argv, a.repeat)
        medians[name] = statistics.median(times)
        print(f"{name:40s} median {medians[name] * 1000:7.1f} ms  (min {min(times) * 1000:.1f}, "
              f"max {max(times) * 1000:.1f}, n={a.repeat}; CPU median {statistics.median(cpu) * 1000:.1f} ms)")
    got = medians["carbonrun report last"]
    print(f"target: `carbonrun report last` on {a.runs:,} runs well under {TARGET_S} s -> "
          f"{got:.3f} s: {'OK' if got < TARGET_S else 'TOO SLOW'}")
    hist = medians["carbonrun history --limit 0"]
    verdict = "OK" if hist < HISTORY_TARGET_S else f"TOO SLOW by {hist - HISTORY_TARGET_S:.3f} s"
    print(f"target: `carbonrun history --limit 0` under {HISTORY_TARGET_S} s at {HISTORY_AT:,} runs -> "
          f"{hist:.3f} s on {a.runs:,} runs: {verdict if a.runs >= HISTORY_AT else 'n/a (fewer runs)'}")
    split = history_split(path, min(a.repeat, 3))
    parts = ", ".join(f"{part} {seconds * 1000:.0f} ms" for part, seconds in split.items())
    print(f"  where it goes (in-process, best of 3): {parts}; the rest is start-up"
          f" (`carbonrun history`, 20 runs: {medians['carbonrun history'] * 1000:.0f} ms)")
    if not a.keep:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    sys.exit(0 if got < TARGET_S else 1)


if __name__ == "__main__":
    main()
