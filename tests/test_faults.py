"""carbonrun's own trouble never decides whether or how the command runs, nor its exit code.

Real faults, as a user meets them: a full or read-only file system in a private mount namespace
(root ignores file modes, so chmod would prove nothing), a file-size limit, a store locked by another
process, stderr closed, full or a broken pipe, signals and stop/continue sent to carbonrun itself, a
device that never answers before the start, bad numbers, an empty command name, and live intensity
servers on loopback that hang, drip or redirect. Every case asserts the command's exit code.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_namespaces = pytest.mark.skipif(not _can_unshare(), reason="needs root and `unshare -m` (mount namespaces)")


def in_namespace(cli, setup: str, *args: str, cwd=None, timeout: float = 30) -> subprocess.CompletedProcess:
    """carbonrun started in a private mount namespace once `setup` (sh, as root) has built the fault."""
    argv = ["unshare", "-m", "sh", "-c", f"set -e; {setup}; exec \"$@\"", "sh", *cli.argv(*args)]
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=cli.env, cwd=cwd or cli.home)


def kept_aside(directory: Path) -> List[dict]:
    """Records carbonrun kept in private files of their own (the store's last resort)."""
    out = []
    for f in sorted(directory.glob("**/kept/carbonrun-*.json")):  # $CARBONRUN_HOME/kept, else XDG state's
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        out.append(json.loads(f.read_text()))
    return out


STORE = '"$CARBONRUN_HOME"'
FULL_TMPFS = f"mkdir -p {STORE}; mount -t tmpfs -o size=64k tmpfs {STORE}; head -c 1M /dev/zero > {STORE}/fill || true"


# -- the store's disk --------------------------------------------------------------------------------------
@needs_namespaces
def test_a_full_disk_at_start_is_a_warning_and_the_command_runs(cli):
    p = in_namespace(cli, FULL_TMPFS, "--quiet", "--", "sh", "-c", "echo ran; exit 7")
    assert p.returncode == 7, p.stderr.decode()
    assert p.stdout == b"ran\n"
    err = p.stderr.decode()
    assert "warning" in err and "full" in err and "Traceback" not in err
    assert "move it aside" not in err  # a full disk is not the store file's fault
    [rec] = kept_aside(cli.home)
    assert rec["exit_code"] == 7 and rec["status"] == "failed"


@needs_namespaces
def test_a_read_only_store_is_a_warning_and_the_command_runs(cli):
    assert cli("--quiet", "true").returncode == 0  # the store exists, then its file system turns read-only
    p = in_namespace(cli, f"mount --bind {STORE} {STORE}; mount -o remount,bind,ro {STORE}",
                     "--quiet", "--", "sh", "-c", "exit 3")
    assert p.returncode == 3, p.stderr.decode()
    assert b"warning" in p.stderr and b"Traceback" not in p.stderr
    [rec] = kept_aside(cli.home)
    assert rec["exit_code"] == 3
    assert json.loads(cli("history", "--format", "json").stdout)[0]["exit_code"] == 0  # the store is untouched


@needs_namespaces
def test_a_disk_that_fills_during_the_run_keeps_the_exit_code(cli):
    fill = f"head -c 10M /dev/zero > {STORE}/fill 2>/dev/null; exit 5"
    p = in_namespace(cli, f"mkdir -p {STORE}; mount -t tmpfs -o size=400k tmpfs {STORE}",
                     "--quiet", "--", "sh", "-c", fill)
    assert p.returncode == 5, p.stderr.decode()
    [rec] = kept_aside(cli.home)
    assert rec["exit_code"] == 5 and rec["status"] == "failed"


@needs_namespaces
def test_nowhere_to_keep_the_record_keeps_it_in_the_summary(cli):
    # /tmp and the home read-only, contents still there (the venv may live under /tmp, as in a CI clone):
    # the store, the data and state directories, $TMPDIR and /tmp all refuse a file
    ro = 'mount --bind "{0}" "{0}"; mount -o remount,bind,ro "{0}"'
    setup = "; ".join([ro.format("/tmp"), ro.format("$HOME"), 'cd "$HOME"'])
    p = in_namespace(cli, setup, "--quiet", "--", "sh", "-c", "exit 9", cwd="/")
    assert p.returncode == 9, p.stderr.decode()
    assert b"only in this summary" in p.stderr and b"Traceback" not in p.stderr


def test_a_file_size_limit_below_the_store_keeps_the_exit_code(cli):
    """`ulimit -f 4` (4 KiB): every file carbonrun writes fails (SIGXFSZ, then EFBIG), the command's own
    small output does not; the record survives in the summary."""
    argv = cli.argv("--quiet", "--", "sh", "-c", "echo ran; exit 3")
    p = subprocess.run(["sh", "-c", 'ulimit -f 4; exec "$@"', "sh", *argv], capture_output=True, env=cli.env,
                       cwd=cli.home, timeout=60)
    assert p.returncode == 3, p.stderr.decode()
    assert p.stdout == b"ran\n" and b"only in this summary" in p.stderr and b"Traceback" not in p.stderr


def test_a_locked_store_does_not_delay_the_start(cli, tmp_path):
    """Another process holds the store's write lock through the whole command: the command starts at once
    all the same, its duration is not stretched by waits for the lock, and the run is stored once the
    lock is let go."""
    assert cli("--quiet", "true").returncode == 0
    db = sqlite3.connect(str(cli.home / "store" / "runs.sqlite"), isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    t0 = time.time()
    p = subprocess.Popen(cli.argv("--quiet", "--", sys.executable, "-c",
                                  "import time; print(time.time(), flush=True); time.sleep(0.3); raise SystemExit(4)"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env, cwd=cli.home)
    try:
        started = float(p.stdout.readline())
        time.sleep(1.2)  # the command ends meanwhile; carbonrun's final save waits for the lock
    finally:
        db.execute("ROLLBACK")
        db.close()
    p.wait(timeout=60)
    assert p.returncode == 4, p.stderr.read().decode()
    assert started - t0 < 3.0, "the command waited for the store's lock"
    rec = cli.record()
    assert rec["exit_code"] == 4 and rec["status"] == "failed"
    assert rec["duration_s"] < 1.0, "the lock's waits were counted as the command's time"


# -- stderr ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("summary", ["--quiet", "--no-live"])
@pytest.mark.parametrize("fault", ["closed", "full", "broken-pipe"])
def test_stderr_trouble_keeps_the_exit_code_and_the_record(cli, fault, summary):
    argv = cli.argv(summary, "--", "sh", "-c", "echo out; exit 6")
    if fault == "closed":
        p = subprocess.run(["sh", "-c", 'exec 2>&-; exec "$@"', "sh", *argv], stdout=subprocess.PIPE,
                           env=cli.env, cwd=cli.home, timeout=60)
        code, out = p.returncode, p.stdout
    elif fault == "full":
        with open("/dev/full", "wb") as full:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=full, env=cli.env, cwd=cli.home, timeout=60)
        code, out = p.returncode, p.stdout
    else:
        r, w = os.pipe()
        os.close(r)  # nobody reads: every write gets EPIPE (and SIGPIPE)
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=w, env=cli.env, cwd=cli.home, timeout=60)
        finally:
            os.close(w)
        code, out = p.returncode, p.stdout
    assert code == 6 and out == b"out\n"
    rec = cli.record()
    assert rec["exit_code"] == 6 and rec["status"] == "failed"


# -- signals and job control sent to carbonrun ---------------------------------------------------------------
SIGNALS = ["SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGXFSZ", "SIGPIPE", "SIGUSR1", "SIGUSR2", "SIGHUP",
           "SIGTERM", "SIGINT", "SIGQUIT", "SIGIO", "SIGPWR", "SIGRTMIN", "SIGRTMAX", "SIGSEGV", "SIGABRT", "SIGBUS",
           "SIGILL", "SIGFPE", "SIGTRAP", "SIGSYS"]


def test_every_terminating_signal_reaches_the_command(cli):
    """Sent to carbonrun alone (kill), each ends the command by that signal; carbonrun reports 128+N and is
    never itself killed by it (which would orphan the command)."""
    procs = {}
    for name in SIGNALS:
        procs[name] = subprocess.Popen(cli.argv("--quiet", "--", "sh", "-c", "ulimit -c 0; echo ready; exec sleep 20"),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env, cwd=cli.home)
    try:
        for name, p in procs.items():
            assert p.stdout.readline() == b"ready\n"
            os.kill(p.pid, getattr(signal, name))
        for name, p in procs.items():
            p.wait(timeout=30)
            assert p.returncode == 128 + getattr(signal, name), (name, p.stderr.read().decode())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("stop_at, cont_after", [(0.0, 0.5), (0.05, 0.4), (0.15, 0.3), (0.25, 0.25), (0.3, 0.0)])
def test_stop_and_continue_while_the_command_exits(cli, stop_at, cont_after):
    """carbonrun stopped (SIGSTOP) around the moment its command exits, then continued."""
    p = subprocess.Popen(cli.argv("--quiet", "--", "sh", "-c", "echo ready; sleep 0.2; exit 4"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli.env, cwd=cli.home)
    try:
        assert p.stdout.readline() == b"ready\n"
        time.sleep(stop_at)
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(cont_after)
        os.kill(p.pid, signal.SIGCONT)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 4, p.stderr.read().decode()


# -- what the user typed -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--", ""], [""], ["--quiet", "--", ""]])
def test_an_empty_command_name_is_127_like_a_shell(cli, args):
    p = cli(*args)
    assert p.returncode == 127
    assert p.stderr.decode().strip().splitlines() == ["carbonrun: error: command not found: ''"]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "-1"])
def test_a_non_finite_interval_is_refused_before_anything_starts(cli, value):
    marker = cli.home / "ran"
    p = cli("--interval", value, "--", "touch", str(marker))
    assert p.returncode == 2, p.stderr.decode()
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carbonrun: error:") and "interval" in lines[0]
    assert not marker.exists()


# -- live intensity servers ------------------------------------------------------------------------------------
NET_ENV = {"http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "no_proxy": "127.0.0.1"}
STARTED_AT = "import sys, time; print(time.time(), flush=True); time.sleep(float(sys.argv[1])); raise SystemExit(8)"


def run_with_provider(cli, url: str, sleep_s: float):
    t0 = time.time()
    p = cli("--quiet", "--provider", "uk", "--provider-url", url, "--region", "GB", "--",
            sys.executable, "-c", STARTED_AT, str(sleep_s), env=NET_ENV, timeout=60)
    return p, float(p.stdout.split()[0]) - t0 if p.stdout else None, time.time() - t0


@pytest.mark.parametrize("mode", ["hang", "drip", "redirect"])
def test_a_misbehaving_provider_never_delays_the_start(cli, mode):
    from tests.fakes.badhttp import BadServer

    server = BadServer(mode)
    try:
        p, start_s, total_s = run_with_provider(cli, server.url, 0.1)
    finally:
        server.close()
    assert p.returncode == 8, p.stderr.decode()
    assert start_s is not None and start_s < 2.5, f"the command started {start_s:.1f} s late"
    assert server.connections >= 1  # the provider was asked, in the background
    live = cli.record()["intensity"]
    assert live["source"] == "table:country" and live["region"] == "GB" and live["live"]["used"] is False
    assert live["live"]["before"]["source"] == "table:country"


def test_a_live_value_arriving_during_the_run_is_used_from_then_on(cli):
    from tests.fakes.http import Server

    half = time.time() - time.time() % 1800
    stamp = [time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(t)) for t in (half, half + 1800)]
    server = Server()
    server.routes["/intensity"] = (200, {"data": [{"from": stamp[0], "to": stamp[1],
                                                   "intensity": {"forecast": 150, "actual": 142}}]}, 0.4)
    try:
        p, start_s, _ = run_with_provider(cli, server.url, 1.2)
    finally:
        server.close()
    assert p.returncode == 8, p.stderr.decode()
    assert start_s is not None and start_s < 2.5
    rec = cli.record()["intensity"]
    assert rec["source"] == "provider:uk" and rec["live"]["used"] is True
    assert rec["live"]["arrived_after_s"] >= 0.4 and rec["live"]["before"]["source"] == "table:country"
    before = rec["live"]["before"]["g_per_kwh"]
    assert min(before, 142) < rec["g_per_kwh"] < max(before, 142)  # energy-weighted: both figures were used


def test_a_counter_that_is_a_fifo_never_hangs_the_start(cli, tmp_path):
    """A FIFO planted where a RAPL counter should be is read without blocking: unreadable, noted, the command runs."""
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    os.mkfifo(zone / "energy_uj")
    marker = tmp_path / "ran"
    p = cli("--quiet", "--rapl-root", str(zone.parent), "--", "touch", str(marker), timeout=20)
    assert p.returncode == 0 and marker.exists(), p.stderr.decode()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_carbonrun_stuck_before_the_start_still_ends_on_a_signal(cli, tmp_path, sig, code):
    """A PostgreSQL server that accepts and never answers holds carbonrun before the command starts (for
    its connect timeout): there is nothing to pass a signal on to yet, so carbonrun ends on it."""
    pytest.importorskip("psycopg")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db"
    marker = tmp_path / "ran"
    p = subprocess.Popen(cli.argv("--quiet", "--store", url, "--", "touch", str(marker)),
                         stderr=subprocess.PIPE, env=cli.env, cwd=cli.home)
    try:
        time.sleep(1.0)
        assert p.poll() is None  # stuck, as the fault intends
        os.kill(p.pid, sig)
        p.wait(timeout=10)
    finally:
        silent.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == code, p.stderr.read().decode()
    assert not marker.exists()


def test_the_unmeasured_fallback_keeps_the_start_state_signals_and_exit_code(cli):
    """What a run falls back to when the measurement cannot be set up: the same start, signals passed on."""
    script = ("import sys; from carbonrun.measure.session import caller, run_unmeasured; caller();"
              " sys.exit(run_unmeasured(sys.argv[1:]))")
    child = "grep -E '^SigIgn' /proc/self/status; echo ready; exec sleep 20"
    p = subprocess.Popen([sys.executable, "-c", script, "sh", "-c", child], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=cli.env, cwd=cli.home)
    try:
        ignored = p.stdout.readline()
        assert p.stdout.readline() == b"ready\n"
        os.kill(p.pid, signal.SIGALRM)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    direct = subprocess.run(["grep", "-E", "^SigIgn", "/proc/self/status"], capture_output=True).stdout
    assert ignored == direct
    assert p.returncode == 128 + signal.SIGALRM, p.stderr.read().decode()
