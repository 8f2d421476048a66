#!/usr/bin/env python3
"""carbonrun's performance figures : each from several runs, medians against targets.

    python benchmarks/run.py                  # about 4 minutes
    python benchmarks/run.py --quick          # about 2.5 minutes: shorter runs, fewer repeats
    python benchmarks/run.py --long           # memory: 10 s against a 20-minute run (adds 20 min)
    python benchmarks/run.py --peers          # also CodeCarbon, in a throwaway venv (needs PyPI)
    python benchmarks/run.py --json out.json  # every figure and every run as JSON

Stdlib only, plus the repository's tests/fakes. benchmarks/README.md says how each figure is taken.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from tests.fakes.powercap import FakePowercap, Zone, standard_zones  # noqa: E402

WRAP_S = 5.0  # the fake counters wrap every 5 s: every run longer than that crosses a wrap
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK = "@@child-exit@@"
# The exit-latency child: its last act is to stamp CLOCK_MONOTONIC into a file; os._exit skips
# Python's own shutdown, so nothing of the child's interpreter is counted against carbonrun.
CHILD_EXIT = ("import os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
              f"os.write(2, b'{MARK}\\n')\n"
              "os.write(fd, repr(time.monotonic()).encode())\n"
              "os._exit(0)\n")
TIMED = ("start-up", "exit latency", "overhead", "sample rate", "peers (CodeCarbon)")  # need an idle machine
DOZEN = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep {s} & done; wait"
HUNDRED = "i=0; while [ $i -lt 100 ]; do sleep {s} & i=$((i+1)); done; wait"
STORE_SAVE = """
import json, statistics, sys, time
from pathlib import Path
from carbonrun.store.sqlite import Store
record = json.load(open(sys.argv[1]))
record["id"] = None
store = Store(Path(sys.argv[2]))
store.begin(record, time.time())
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    store.save(record)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


class BenchError(Exception):
    pass


# -- figures ---------------------------------------------------------------------------------------
@dataclass
class Figure:
    name: str
    value: Optional[float]  # the median (None: not measured, see `how`)
    unit: str
    target: Optional[float] = None
    op: str = "<="  # met when value <op> target
    how: str = ""
    runs: List[float] = field(default_factory=list)
    target_text: str = ""

    def met(self) -> Optional[bool]:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def verdict(self) -> str:
        ok = self.met()
        if ok is None:
            return "—" if self.value is not None else "not measured"
        if ok:
            return "yes"
        assert self.value is not None and self.target is not None
        gap = abs(self.value - self.target)
        side = "over" if self.op == "<=" else "short"
        return f"**no**: {num(gap)} {self.unit} {side} ({self.value / self.target:.2f}×)"

    def target_str(self) -> str:
        if self.target_text:
            return self.target_text
        return "—" if self.target is None else f"{self.op} {num(self.target)} {self.unit}"


def num(v: Optional[float]) -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# -- context and processes ---------------------------------------------------------------------------
@dataclass
class Ctx:
    cr: List[str]  # how carbonrun is started
    cr_label: str
    python: str  # carbonrun's interpreter
    tmp: Path
    env: Dict[str, str]
    cwd: Path
    quick: bool
    fake: Optional[Path] = None
    zones: List[Zone] = field(default_factory=list)
    counter: int = 0
    extras: Dict[str, object] = field(default_factory=dict)  # importtime tables etc. for --json

    def path(self, stem: str, suffix: str = "") -> Path:
        self.counter += 1
        return self.tmp / f"{stem}-{self.counter}{suffix}"


def make_ctx(tmp: Path, quick: bool) -> Ctx:
    venv = ROOT / ".venv" / "bin"
    script = (os.environ.get("BENCH_CARBONRUN")  # a console script to measure (e.g. a regular install's)
              or (venv / "carbonrun" if (venv / "carbonrun").exists() else shutil.which("carbonrun")))
    python = str(venv / "python") if (venv / "python").exists() else sys.executable
    if script:
        shebang = Path(script).read_text(errors="replace").splitlines()[0]
        python = shebang[2:].strip() if shebang.startswith("#!") else python
        cr, label = [str(script)], f"console script {script}"
    else:
        cr, label = [python, "-m", "carbonrun"], f"{python} -m carbonrun (no console script found)"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CARBONRUN_") and k != "PYTHONDONTWRITEBYTECODE"}
    # An installed carbonrun runs from compiled bytecode; keep it out of the source tree.
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    for key, sub in (("CARBONRUN_HOME", "home"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")):
        (tmp / sub).mkdir()
        env[key] = str(tmp / sub)
    (tmp / "cwd").mkdir()
    return Ctx(cr, label, python, tmp, env, tmp / "cwd", quick)


@dataclass
class Exit:
    wall_s: float  # from just before the spawn to wait4's return
    cpu_s: float  # user+system of the process and every child it reaped (wait4's rusage)
    maxrss_mb: float  # peak RSS (of it, or of a reaped child if larger), 10^6 bytes
    code: int
    ended: float  # time.monotonic() when wait4 returned
    ended_wall: float  # time.time() then (shell children stamp the wall clock)


class Proc:
    """One process, started with its output in a log file (or on a fresh pty), reaped with wait4."""

    def __init__(self, ctx: Ctx, argv: Sequence[str], tty: bool = False,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.argv = list(argv)
        self.log = ctx.path("log", ".txt")
        self.drained = 0
        with open(self.log, "wb") as out:
            if tty:
                master, slave = pty.openpty()
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
                streams = dict(stdin=slave, stdout=slave, stderr=slave)
            else:
                streams = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            self.t0 = time.monotonic()
            self.p = subprocess.Popen(self.argv, env=env or ctx.env, cwd=ctx.cwd, **streams)
        if tty:
            os.close(slave)
            threading.Thread(target=self._drain, args=(master,), daemon=True).start()

    def _drain(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.drained += len(data)
        os.close(fd)

    def self_cpu_s(self) -> float:
        return self_cpu_s(self.p.pid)

    def wait(self, check: bool = True) -> Exit:
        _, status, ru = os.wait4(self.p.pid, 0)
        ended = time.monotonic()
        self.p.returncode = code = os.waitstatus_to_exitcode(status)
        if check and code != 0:
            tail = self.log.read_text(errors="replace")[-800:]
            raise BenchError(f"{' '.join(self.argv)} exited {code}:\n{tail}")
        return Exit(ended - self.t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024 / 1e6, code, ended, time.time())


def run(ctx: Ctx, argv: Sequence[str], **kw) -> Exit:
    return Proc(ctx, argv, **kw).wait()


def self_cpu_s(pid: int) -> float:
    """CPU seconds of the process alone (children excluded): the scheduler's ns clock
    (/proc/PID/sched, the main thread) when it has one thread, else utime+stime in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    if int(rest[17]) == 1:  # num_threads
        try:
            with open(f"/proc/{pid}/sched") as f:
                for line in f:
                    if line.startswith("se.sum_exec_runtime"):
                        return float(line.split(":")[1]) / 1000.0
        except OSError:
            pass
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def carbonrun(ctx: Ctx, options: Sequence[str], command: Sequence[str]) -> List[str]:
    return [*ctx.cr, *options, "--", *command]


def fake_options(ctx: Ctx) -> List[str]:
    assert ctx.fake is not None
    return ["--rapl-root", str(ctx.fake)]


# -- start-up ----------------------------------------------------------------------------------------
def bench_startup(ctx: Ctx, n: int) -> List[Figure]:
    run(ctx, carbonrun(ctx, ["--quiet"], ["true"]))  # creates the store, warms caches and .pyc files
    bare, cr, full, py, site, fresh = [], [], [], [], [], []
    for i in range(n):
        bare.append(run(ctx, ["true"]).wall_s)
        cr.append(run(ctx, carbonrun(ctx, ["--quiet"], ["true"])).wall_s)
        full.append(run(ctx, carbonrun(ctx, [], ["true"])).wall_s)
        py.append(run(ctx, [ctx.python, "-I", "-S", "-c", "pass"]).wall_s)
        site.append(run(ctx, [ctx.python, "-I", "-c", "pass"]).wall_s)
        if i < max(3, n // 2):
            store = ctx.path("fresh", ".sqlite")
            fresh.append(run(ctx, carbonrun(ctx, ["--quiet", "--store", str(store)], ["true"])).wall_s)
    base = med(bare)
    ms = lambda xs: [1000 * (x - base) for x in xs]  # noqa: E731
    return [
        Figure("Start-up: `carbonrun --quiet -- true` minus `true`", med(ms(cr)), "ms", 60,
               how=(f"median of {n} (min {min(ms(cr)):.0f}), {ctx.cr_label}, isolated CARBONRUN_HOME; "
                    f"bare `true` {1000 * base:.1f} ms"), runs=ms(cr)),
        Figure("Start-up, default mode: `carbonrun -- true` minus `true`", med(ms(full)), "ms", 100,
               how=f"median of {n} (min {min(ms(full)):.0f}), full summary on stderr (a file)", runs=ms(full)),
        Figure("  same, first run on a new store (file created)", med(ms(fresh)), "ms",
               how=f"median of {len(fresh)}, `--store NEW` each time", runs=ms(fresh)),
        Figure("  floor: `python -I -S -c pass` minus `true`", med(ms(py)), "ms",
               how=f"median of {n}: the interpreter alone, what no change to carbonrun can remove",
               runs=ms(py)),
        Figure("  floor with this venv's site: `python -I -c pass` minus `true`", med(ms(site)), "ms",
               how=f"median of {n}: adds `site` and the venv's .pth files (an editable install's finder among them)",
               runs=ms(site)),
    ]


@dataclass
class ImportRow:
    module: str
    depth: int
    self_ms: float
    cum_ms: float


def importtime(ctx: Ctx, options: Sequence[str], command: Sequence[str]) -> Tuple[List[ImportRow], List[ImportRow]]:
    """`python -X importtime -m carbonrun ...`: the imports before and after the child's exit mark."""
    p = Proc(ctx, [ctx.python, "-X", "importtime", "-m", "carbonrun", *options, "--", *command])
    p.wait()
    before: List[ImportRow] = []
    after: List[ImportRow] = []
    rows = before
    for line in p.log.read_text(errors="replace").splitlines():
        if line.strip() == MARK:
            rows = after
            continue
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append(ImportRow(m.group(4), (len(m.group(3)) - 1) // 2, int(m.group(1)) / 1000,
                                  int(m.group(2)) / 1000))
    return before, after


def top_level_ms(rows: List[ImportRow]) -> float:
    return sum(r.cum_ms for r in rows if r.depth == 0)


def import_table(rows: List[ImportRow], k: int = 10) -> str:
    lines = ["| cumulative ms | self ms | module (indent = imported by the row above it) |", "|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: r.cum_ms, reverse=True)[:k]:
        lines.append(f"| {r.cum_ms:.1f} | {r.self_ms:.1f} | {'· ' * r.depth}`{r.module}` |")
    return "\n".join(lines)


def bench_imports(ctx: Ctx) -> List[Figure]:
    rows, _ = importtime(ctx, ["--quiet"], ["true"])
    ctx.extras["importtime_startup"] = [asdict(r) for r in rows]
    stamp = ctx.path("stamp")
    child = [ctx.python, "-I", "-c", CHILD_EXIT, str(stamp)]
    figures = [Figure("  imports on that path (`-X importtime`, all top-level imports)", top_level_ms(rows), "ms",
                      how=f"{len(rows)} modules; importtime's own overhead inflates this; top 10 below")]
    for label, options in (("--quiet", ["--quiet"]), ("full summary", [])):
        _, after = importtime(ctx, options, child)
        ctx.extras[f"importtime_after_exit_{label}"] = [asdict(r) for r in after]
        names = ", ".join(r.module for r in sorted((r for r in after if r.depth == 0),
                                                    key=lambda r: r.cum_ms, reverse=True)[:6])
        figures.append(Figure(f"  imports after the child exits ({label})", top_level_ms(after), "ms",
                              how=f"{len(after)} modules, biggest: {names or 'none'}"))
    return figures


# -- exit latency ------------------------------------------------------------------------------------
def exit_latency(ctx: Ctx, prefix: Sequence[str], tty: bool = False) -> float:
    """Seconds from the child's last act to wait4's return on the outermost process.

    The child is a shell that works 0.3 s (so carbonrun is in its steady state, its summary's
    imports warmed or not) and then stamps CLOCK_REALTIME with `date` as its last act."""
    stamp = ctx.path("stamp")
    child = ["sh", "-c", f"sleep 0.3; date +%s.%N > {stamp}"]
    p = Proc(ctx, [*prefix, *child], tty=tty)
    ex = p.wait()
    return ex.ended_wall - float(stamp.read_text())


def store_write_ms(ctx: Ctx, saves: int = 20) -> Optional[float]:
    """Median Store.save() of a real final record (from `--json`) into a fresh store, in-process."""
    rec = ctx.path("record", ".json")
    run(ctx, carbonrun(ctx, ["--quiet", "--json", str(rec)], ["true"]))
    out = subprocess.run([ctx.python, "-c", STORE_SAVE, str(rec), str(ctx.path("save", ".sqlite")), str(saves)],
                         capture_output=True, text=True, env=ctx.env, cwd=ctx.cwd)
    if out.returncode != 0:
        return None
    return 1000 * float(out.stdout.strip())


def bench_exit(ctx: Ctx, n: int) -> List[Figure]:
    quiet, full = [*ctx.cr, "--quiet", "--"], [*ctx.cr, "--"]
    bare, q, f, t = [], [], [], []
    for _ in range(n):
        bare.append(exit_latency(ctx, []))
        q.append(exit_latency(ctx, quiet))
        f.append(exit_latency(ctx, full))
        t.append(exit_latency(ctx, full, tty=True))
    base = med(bare)
    ms = lambda xs: [1000 * (x - base) for x in xs]  # noqa: E731
    store = store_write_ms(ctx)
    how = (f"median of {n} (min {{:.0f}}): a shell child works 0.3 s, stamps the wall clock with `date` and "
           f"exits; until carbonrun's wait4 returns; bare child {1000 * base:.2f} ms subtracted")
    return [
        Figure("Exit latency, `--quiet`", med(ms(q)), "ms", 25, how=how.format(min(ms(q))), runs=ms(q)),
        Figure("Exit latency, full summary (stderr not a tty)", med(ms(f)), "ms", 25, how=how.format(min(ms(f))),
               runs=ms(f)),
        Figure("Exit latency, full summary on a pty (live table drawn)", med(ms(t)), "ms", 25,
               how=how.format(min(ms(t))), runs=ms(t)),
        Figure("  store write: Store.save() of a final record", store, "ms",
               how="median of 20 saves into a fresh store, in-process (autocommit, WAL)"),
    ]


# -- overhead while measuring -----------------------------------------------------------------------
def child_cmd(secs: float, kids: int) -> List[str]:
    """`sleep` alone, or a shell with 12 or 100 `sleep` children."""
    if kids == 0:
        return ["sleep", str(secs)]
    return ["sh", "-c", (DOZEN if kids == 12 else HUNDRED).format(s=secs)]


def cpu_overhead(ctx: Ctx, argv: Callable[[float], List[str]], secs: float, reps: int,
                 tty: bool = False, env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Runs `reps` copies side by side (CPU time, not wall time, is measured, so they barely
    interfere): (cpu(secs) - cpu(0)) / secs from wait4, and the process's own CPU over a window."""
    procs = [Proc(ctx, argv(secs), tty=tty, env=env) for _ in range(reps)]
    t0 = procs[0].t0
    w0, w1 = min(1.5, secs / 3), secs - 0.5
    sleep_until(t0 + w0)
    c0, a = [p.self_cpu_s() for p in procs], time.monotonic()
    sleep_until(t0 + w1)
    c1, b = [p.self_cpu_s() for p in procs], time.monotonic()
    longs = [p.wait() for p in procs]
    drawn = med([p.drained for p in procs])
    zeros = [p.wait() for p in [Proc(ctx, argv(0), tty=tty, env=env) for _ in range(reps)]]
    diff = 100 * (med([e.cpu_s for e in longs]) - med([e.cpu_s for e in zeros])) / secs
    window = [100 * (y - x) / (b - a) for x, y in zip(c0, c1)]
    return {"diff": diff, "window": med(window), "windows": window, "drawn": drawn, "w0": w0,
            "cpu_long": [e.cpu_s for e in longs], "cpu_zero": [e.cpu_s for e in zeros]}


def bench_overhead(ctx: Ctx, secs: float, reps: int) -> List[Figure]:
    variants = [("`sleep`, `--quiet`", True, 0, False),
                ("`sleep`, default (no tty: no live table)", False, 0, False),
                ("dozen `sleep` children, `--quiet`", True, 12, False),
                ("dozen `sleep` children, default", False, 12, False),
                ("100 `sleep` children, `--quiet`", True, 100, False),
                ("100 `sleep` children, `--quiet`, no cgroup (/proc walk)", True, 100, False),
                ("`sleep` on a pty, live table drawn", False, 0, True)]
    figures = []
    for label, quiet, kids, tty in variants:
        opts = ["--quiet"] if quiet else []
        env = dict(ctx.env, CARBONRUN_CGROUP="off") if "no cgroup" in label else None
        r = cpu_overhead(ctx, lambda s, k=kids, o=opts: carbonrun(ctx, o, child_cmd(s, k)), secs, reps, tty, env)
        extra = f"; live table wrote {r['drawn'] / 1000:.0f} kB" if tty else ""
        figures.append(Figure(f"Overhead: {label}", r["window"], "% of a core", 0.3 if quiet else 1.0,
                              how=(f"own CPU from {r['w0']:g} s to {secs - 0.5:g} s of a {secs:g} s run, median of "
                                   f"{reps}; cross-check (CPU of {secs:g} s run − of 0 s run) / {secs:g} s: "
                                   f"{r['diff']:.3f}%{extra}"), runs=r["windows"]))
        ctx.extras[f"overhead {label}"] = r
    floor = c_poller(ctx)
    if floor is not None:
        r = cpu_overhead(ctx, lambda s: [str(floor), *child_cmd(s, 100)], secs, reps)
        figures.append(Figure("  floor: a C poller doing the /proc walk, 100 children", r["window"], "% of a core",
                              how=("the same work in C (reads /proc/stat every 0.1 s, walks the tree's children "
                                   "files and reads each stat every 0.2 s): what Python costs on top of it"),
                              runs=r["windows"]))
    return figures


C_POLLER = r"""
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static char buf[65536];
static long slurp(const char *path) {
    int fd = open(path, O_RDONLY); if (fd < 0) return -1;
    long n = read(fd, buf, sizeof buf - 1); close(fd); if (n >= 0) buf[n] = 0; return n;
}
static double walk(int pid) {  /* utime+stime+cutime+cstime of pid and its descendants */
    char path[128]; double total = 0; int kids[4096], nk = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (slurp(path) > 0) {
        char *p = strrchr(buf, ')'); long v[20]; int i = 0;
        for (p += 2; *p && i < 20; i++) { v[i] = strtol(p, &p, 10); while (*p == ' ') p++;
            if (i == 0) { while (*p && *p != ' ') p++; while (*p == ' ') p++; } }
        if (i >= 15) total += v[11] + v[12] + v[13] + v[14];
    }
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    if (slurp(path) > 0)
        for (char *p = buf; *p && nk < 4096; ) {
            char *end; long k = strtol(p, &end, 10);
            if (end == p) break;
            kids[nk++] = (int)k; p = end;
        }
    for (int i = 0; i < nk; i++) total += walk(kids[i]);
    return total;
}
int main(int argc, char **argv) {
    pid_t child = fork();
    if (child == 0) { execvp(argv[1], argv + 1); _exit(127); }
    struct timespec tick = {0, 100000000}; int n = 0, status; volatile double sink = 0;
    while (waitpid(child, &status, WNOHANG) == 0) {
        nanosleep(&tick, NULL); slurp("/proc/stat");
        if (++n % 2 == 0) sink += walk(child);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"""


def c_poller(ctx: Ctx) -> Optional[Path]:
    """Compile the C floor with the system's cc; None (the row is skipped) without a compiler."""
    src, exe = ctx.tmp / "poller.c", ctx.tmp / "poller"
    src.write_text(C_POLLER)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True).returncode != 0:
        return None
    return exe


# -- with the fake powercap tree ---------------------------------------------------------------------
def expected_steps() -> str:
    step = attribution_step()
    return f"{1 / float(step):g}" if step != "?" else "?"


def attribution_step() -> str:
    m = re.search(r"^ATTRIBUTION_STEP_S\s*=\s*([0-9.]+)", (ROOT / "carbonrun" / "collectors" / "base.py").read_text(),
                  re.M)
    return m.group(1) if m else "?"


def measured_run(ctx: Ctx, options: Sequence[str], secs: float) -> Tuple[Exit, dict]:
    rec = ctx.path("record", ".json")
    ex = run(ctx, carbonrun(ctx, ["--quiet", *fake_options(ctx), "--json", str(rec), *options], ["sleep", str(secs)]))
    record = json.loads(rec.read_text())
    sources = {c["source"] for c in record["components"]}
    if sources != {"rapl"}:
        raise BenchError(f"carbonrun did not read the fake powercap tree (sources {sources})")
    return ex, record


def bench_sample_rate(ctx: Ctx, secs: float, reps: int) -> List[Figure]:
    rates, steps, cpu = [], [], []
    for _ in range(reps):
        ex, rec = measured_run(ctx, ["--interval", "0.001"], secs)
        rates.append(rec["samples"] / rec["duration_s"])
        steps.append(len(rec["timeline"]["t"]) / rec["duration_s"])
        cpu.append(100 * ex.cpu_s / ex.wall_s)
    return [Figure("Sample rate at `--interval 0.001` (fake RAPL)", med(rates), "samples/s", 500, op=">=",
                   how=(f"record samples / duration_s, median of {reps} × {secs:g} s; the process tree is "
                        f"refreshed at its own rate (ATTRIBUTION_STEP_S = {attribution_step()} s): "
                        f"{med(steps):.1f} steps/s seen in the timeline; carbonrun used {med(cpu):.0f}% of a core"),
                   runs=rates)]


def truth_watts(zones: List[Zone], component: str) -> float:
    if component == "cpu":
        return sum(z.watts for z in zones if z.name.startswith("package"))
    if component == "dram":
        return sum(c.watts for z in zones for c in z.children if c.name == "dram")
    raise BenchError(f"no truth for component {component}")


def energy_error_pct(ctx: Ctx, rec: dict) -> float:
    counted = [c for c in rec["components"] if c["counted"]]
    measured = sum(c["machine_j"] for c in counted)
    truth = rec["duration_s"] * sum(truth_watts(ctx.zones, c["component"]) for c in counted)
    return 100 * (measured / truth - 1)


def bench_accuracy(ctx: Ctx, secs: float, reps: int) -> List[Figure]:
    procs, recs = [], []
    for _ in range(reps):
        rec = ctx.path("record", ".json")
        opts = ["--quiet", "--attribution", "machine", *fake_options(ctx), "--json", str(rec)]
        procs.append(Proc(ctx, carbonrun(ctx, opts, ["sleep", str(secs)])))
        recs.append(rec)
    for p in procs:
        p.wait()
    records = [json.loads(r.read_text()) for r in recs]
    errors = [energy_error_pct(ctx, rec) for rec in records]
    steps = [len(rec["timeline"]["t"]) / rec["duration_s"] for rec in records]
    watts = truth_watts(ctx.zones, "cpu") + truth_watts(ctx.zones, "dram")
    return [Figure("Accuracy: machine energy vs truth, absolute error", med([abs(e) for e in errors]), "%", 0.5,
                   how=(f"{reps} runs side by side, `--attribution machine -- sleep {secs:g}`, fake RAPL at "
                        f"{watts:g} W wrapping every {WRAP_S:g} s; truth = W × duration_s; signed errors "
                        + ", ".join(f"{e:+.3f}%" for e in errors)), runs=errors),
            Figure("  attribution steps/s at the default `--interval 0.1`", med(steps), "steps/s",
                   how=(f"timeline points / duration_s of those runs; ATTRIBUTION_STEP_S = "
                        f"{attribution_step()} s, so {expected_steps()} expected"), runs=steps)]


def watch_rss(p: Proc, every: float) -> List[Tuple[float, float]]:
    """(seconds, VmRSS MB) every `every` s until the process is a zombie."""
    trace: List[Tuple[float, float]] = []
    while True:
        time.sleep(every)
        try:
            with open(f"/proc/{p.p.pid}/status") as f:
                kb = [int(line.split()[1]) for line in f if line.startswith("VmRSS:")]
        except OSError:
            break
        if not kb:
            break
        trace.append((time.monotonic() - p.t0, kb[0] * 1024 / 1e6))
    return trace


def bench_memory(ctx: Ctx, short: float, long: float) -> List[Figure]:
    out: Dict[float, Tuple[Exit, dict, List[Tuple[float, float]]]] = {}
    for secs in (short, long):
        rec = ctx.path("record", ".json")
        p = Proc(ctx, carbonrun(ctx, ["--quiet", "--interval", "0.001", *fake_options(ctx), "--json", str(rec)],
                                ["sleep", str(secs)]))
        trace = watch_rss(p, max(1.0, secs / 12))
        out[secs] = (p.wait(), json.loads(rec.read_text()), trace)
    (es, rs, _), (el, rl, tl) = out[short], out[long]
    ctx.extras["rss_trace_long"] = tl
    growth = el.maxrss_mb - es.maxrss_mb
    trace = ", ".join(f"{t:.0f} s: {mb:.1f}" for t, mb in tl[:: max(1, len(tl) // 4)])
    return [
        Figure(f"Peak RSS, {short:g} s run at `--interval 0.001`", es.maxrss_mb, "MB", 60,
               how=f"ru_maxrss from wait4; {rs['samples']:,} samples"),
        Figure(f"Peak RSS, {long:g} s run at `--interval 0.001`", el.maxrss_mb, "MB", 60,
               how=f"ru_maxrss from wait4; {rl['samples']:,} samples; VmRSS over the run (MB): {trace}"),
        Figure(f"  growth, {long:g} s run minus {short:g} s run", growth, "MB", 1.0,
               how="flat with run length: the longer run may not use more (1 MB allowed for page-level noise)"),
    ]


# -- peers -------------------------------------------------------------------------------------------
def bench_peers(ctx: Ctx, secs: float, reps: int, n: int,
                ours: Dict[str, Figure]) -> Tuple[List[Figure], List[List[str]]]:
    python, version = peers.codecarbon_python()
    if python is None:
        return [Figure("CodeCarbon", None, "", how=f"skipped: {version}")], []
    script = ctx.tmp / "cc_wrap.py"
    cc = lambda cmd: peers.wrapper_argv(python, script, cmd)  # noqa: E731
    env = peers.wrapper_env(ctx.env, ctx.fake, None, None)
    run(ctx, cc(["true"]), env=env)  # compiles its bytecode into the private cache
    # start + stop, both tools on the fake tree
    bare, ccs, crs = [], [], []
    for _ in range(n):
        bare.append(run(ctx, ["true"]).wall_s)
        ccs.append(run(ctx, cc(["true"]), env=env).wall_s)
        crs.append(run(ctx, carbonrun(ctx, ["--quiet", *fake_options(ctx)], ["true"])).wall_s)
    cc_start, cr_start = 1000 * (med(ccs) - med(bare)), 1000 * (med(crs) - med(bare))
    # CPU overhead at the same sampling rate (one reading a second each), then at each tool's defaults
    # (CodeCarbon every 15 s, carbonrun every 0.1 s): equal rates are the fair comparison.
    env1 = peers.wrapper_env(ctx.env, ctx.fake, None, 1.0)
    cc_ovh = cpu_overhead(ctx, lambda s: cc(["sleep", str(s)]), secs, reps, env=env1)
    cr_ovh = cpu_overhead(ctx, lambda s: carbonrun(ctx, ["--quiet", "--interval", "1", *fake_options(ctx)],
                                                   ["sleep", str(s)]), secs, reps)
    cc_def = cpu_overhead(ctx, lambda s: cc(["sleep", str(s)]), secs, reps, env=env)
    cr_def = cpu_overhead(ctx, lambda s: carbonrun(ctx, ["--quiet", *fake_options(ctx)], ["sleep", str(s)]),
                          secs, reps)
    # Energy error over the wrapper's own window (t_start before start(), t_stop after stop()), on a
    # fake tree whose counters do not wrap during the run (as real RAPL at moderate power) and on the
    # fast-wrapping one (5 s), where sampling slower than the wrap period loses whole wraps.
    errors: Dict[str, Tuple[float, float]] = {}
    with FakePowercap(ctx.tmp / "powercap-nowrap", standard_zones(3600.0)) as steady:
        for tree, zones, wrap in ((steady.root, steady.zones, "no wrap"), (ctx.fake, ctx.zones, "wraps every 5 s")):
            procs = []
            for measure in (None, 1.0):
                out = ctx.path("cc", ".json")
                procs.append((measure, out, Proc(ctx, cc(["sleep", "10"]),
                                                 env=peers.wrapper_env(ctx.env, tree, out, measure))))
            for measure, out, p in procs:
                p.wait()
                r = peers.read_result(out)
                watts = truth_watts(zones, "cpu")
                label = f"{'15 s (default)' if measure is None else '1 s'}, {wrap}"
                # against the command's own run (as carbonrun's figure is), and the tracker's whole window
                errors[label] = (100 * (r["cpu_j"] / (watts * (r["t_stopping"] - r["t_started"])) - 1),
                                 100 * (r["cpu_j"] / (watts * (r["t_stop"] - r["t_start"])) - 1))
    cr_err = ours["accuracy"].value or 0.0
    rows = [["start + stop (`-- true`), ms", f"{cc_start:.0f}", f"{cr_start:.0f}", ratio(cc_start, cr_start)],
            ["CPU overhead, % of a core, both sampling once a second", f"{cc_ovh['window']:.3f}",
             f"{cr_ovh['window']:.3f}", ratio(cc_ovh["window"], cr_ovh["window"])],
            ["CPU overhead, % of a core, each at its default (15 s / 0.1 s)", f"{cc_def['window']:.3f}",
             f"{cr_def['window']:.3f}", ratio(cc_def["window"], cr_def["window"])]]
    for label, (err, whole) in errors.items():
        rows.append([f"package energy error, CodeCarbon every {label} (start() to stop(): {whole:+.2f}%)",
                     f"{err:+.2f}%", f"{cr_err:.3f}% (abs)", ratio(abs(err), cr_err)])
    ctx.extras["peers"] = {"codecarbon": version, "rows": rows, "cc_overhead": cc_ovh, "cr_overhead": cr_ovh,
                           "cc_default": cc_def, "cr_default": cr_def}
    fig = Figure(f"CodeCarbon {version} (see the peers table)", cc_start, "ms",
                 how="start+stop on the fake tree; its powercap root is patched in (it has no option for it)")
    return [fig], rows


def ratio(a: float, b: float) -> str:
    """a / b, or a dash where either is too small to divide meaningfully (noise can go negative)."""
    if b <= 0 or a < 0:
        return "—"
    return f"{a / b:.1f}×" if a / b < 1000 else "> 1,000×"


# -- machine and output ------------------------------------------------------------------------------
def machine(ctx: Ctx) -> Dict[str, str]:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        pass
    pyver = subprocess.run([ctx.python, "-c", "import platform; print(platform.python_version())"],
                           capture_output=True, text=True).stdout.strip()
    return {"cpu": model or platform.processor() or "?", "cores": str(os.cpu_count()), "python": pyver,
            "kernel": platform.release(),
            "rapl": "yes" if os.path.isdir("/sys/class/powercap/intel-rapl") else "no",
            "carbonrun": ctx.cr_label, "date": time.strftime("%Y-%m-%d")}


def table(figures: List[Figure]) -> str:
    lines = ["| Figure | Median | Target | Met | How |", "|---|---:|---|---|---|"]
    for f in figures:
        value = f"{num(f.value)} {f.unit}" if f.value is not None else "—"
        lines.append(f"| {f.name} | {value} | {f.target_str()} | {f.verdict()} | {f.how} |")
    return "\n".join(lines)


def busy_fraction(sample_s: float = 1.0) -> float:
    """Share of the machine's CPU time that was busy over `sample_s` (from /proc/stat)."""
    def read() -> Tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = read()
    time.sleep(sample_s)
    b1, t1 = read()
    return (b1 - b0) / max(1, t1 - t0)


def wait_for_quiet(limit_s: float, threshold: float = 0.10) -> float:
    """Timings are only as good as the machine is idle: wait (up to limit_s) for others' load to pass."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = busy_fraction()
        if busy <= threshold or time.monotonic() >= deadline:
            return busy


def warm_up(ctx: Ctx) -> List[Figure]:
    """Compile every path's bytecode once (quiet, full summary, live table) and create the store."""
    run(ctx, carbonrun(ctx, ["--quiet"], ["true"]))
    run(ctx, carbonrun(ctx, [], ["true"]))
    run(ctx, carbonrun(ctx, [], ["sleep", "0.5"]), tty=True)
    return []


def section(figures: List[Figure], name: str, fn: Callable[[], List[Figure]], ctx: Ctx,
            quiet_s: float = 0.0) -> None:
    t = time.monotonic()
    busy = wait_for_quiet(quiet_s) if quiet_s else busy_fraction(0.5)
    ctx.extras.setdefault("busy_before", {})[name] = round(100 * busy, 1)  # type: ignore[index]
    print(f"… {name} (machine {100 * busy:.0f}% busy before)", file=sys.stderr, flush=True)
    try:
        figures.extend(fn())
    except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        figures.append(Figure(name, None, "", how=f"failed: {e}".replace("\n", " ")[:300]))
    print(f"  {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (overhead 5 s, memory 5 s vs 60 s)")
    ap.add_argument("--long", action="store_true", help="memory: 10 s against 1200 s (adds twenty minutes)")
    ap.add_argument("--peers", action="store_true", help="also measure CodeCarbon (installs it into /tmp/cc-venv)")
    ap.add_argument("--json", metavar="FILE", help="write every figure and run to FILE")
    args = ap.parse_args(argv)
    quick = args.quick
    n = 5 if quick else 10
    secs = 5.0 if quick else 20.0
    mem = (10.0, 1200.0) if args.long else ((5.0, 60.0) if quick else (10.0, 60.0))
    figures: List[Figure] = []
    peer_rows: List[List[str]] = []
    with tempfile.TemporaryDirectory(prefix="carbonrun-bench-") as tmp:
        ctx = make_ctx(Path(tmp), quick)
        info = machine(ctx)
        info["nice"] = str(os.getpriority(os.PRIO_PROCESS, 0))  # as it is: no priority games
        wait = 5.0 if quick else 15.0
        section(figures, "warm-up", lambda: warm_up(ctx), ctx)
        section(figures, "start-up", lambda: bench_startup(ctx, n), ctx, wait)
        section(figures, "imports", lambda: bench_imports(ctx), ctx)
        section(figures, "exit latency", lambda: bench_exit(ctx, n), ctx, wait)
        section(figures, "overhead", lambda: bench_overhead(ctx, secs, 3), ctx, wait)
        with FakePowercap(Path(tmp) / "powercap", standard_zones(WRAP_S)) as fake:
            ctx.fake, ctx.zones = fake.root, fake.zones
            section(figures, "sample rate", lambda: bench_sample_rate(ctx, 2.0 if quick else 5.0, 3), ctx, wait)
            section(figures, "accuracy", lambda: bench_accuracy(ctx, 10.0, 3), ctx)
            section(figures, "memory", lambda: bench_memory(ctx, *mem), ctx)
            if args.peers:
                ours = {"accuracy": next((f for f in figures if f.name.startswith("Accuracy")), Figure("", None, ""))}

                def peers_section() -> List[Figure]:
                    figs, rows = bench_peers(ctx, secs, 3, n, ours)
                    peer_rows.extend(rows)
                    return figs
                section(figures, "peers (CodeCarbon)", peers_section, ctx, wait)
        report(info, figures, ctx, peer_rows, quick, mem)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "quick": quick, "memory_runs_s": mem,
                                                   "figures": [asdict(f) | {"met": f.met()} for f in figures],
                                                   "extras": ctx.extras}, indent=1, default=str) + "\n")
    return 0 if all(f.met() is not False for f in figures) else 1


def report(info: Dict[str, str], figures: List[Figure], ctx: Ctx, peer_rows: List[List[str]],
           quick: bool, mem: Tuple[float, float]) -> None:
    print(f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, Linux {info['kernel']}, "
          f"RAPL: {info['rapl']}; {info['date']}; {'--quick' if quick else 'full'} run; nice {info['nice']}; "
          f"carbonrun via {info['carbonrun']}")
    busy = ctx.extras.get("busy_before", {})
    print("Machine busy (all CPUs, %) just before each section: "
          + ", ".join(f"{k} {v:g}" for k, v in busy.items()))  # type: ignore[union-attr]
    loaded = [k for k, v in busy.items() if v > 10 and k in TIMED]  # type: ignore[union-attr]
    if loaded:
        print(f"**Warning**: other work kept the machine busy before {', '.join(loaded)}: the wall-clock "
              "figures there are inflated; rerun on an idle machine.")
    print()
    print(table(figures))
    rows = ctx.extras.get("importtime_startup")
    if rows:
        print("\nTop 10 imports of `carbonrun --quiet -- true` by cumulative time (`python -X importtime`):\n")
        print(import_table([ImportRow(**r) for r in rows]))  # type: ignore[arg-type]
    if peer_rows:
        print("\nPeers, each at its defaults, on the same fake powercap tree:\n")
        print("| Figure | CodeCarbon | carbonrun | ratio |\n|---|---:|---:|---:|")
        for r in peer_rows:
            print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    sys.exit(main())
