"""A wrapper is invisible: each command of a corpus runs directly and under `carbonrun`, and both must
leave the same observable trace (stdout and stderr bytes, exit code, and the start state the command
reports: signal dispositions and mask, umask, limits, fds, cwd, environment, process group, niceness).

Both runs start from the same caller, a small program that first gives itself a start state unlike
the defaults (umask 027, lowered limits, SIGHUP ignored as under nohup, SIGUSR2 and a real-time
signal blocked, an inherited fd 7, a marker variable, niceness +1), so a wrapper that resets
anything to its own idea of normal is caught, not only one that leaks its own state.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import CLI

CALLER = r"""
import os, resource, signal, sys
mode = sys.argv[1]
os.umask(0o027)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(777, hard), hard))
_, hard = resource.getrlimit(resource.RLIMIT_CORE)
resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
_, hard = resource.getrlimit(resource.RLIMIT_STACK)
resource.setrlimit(resource.RLIMIT_STACK, (6 << 20 if hard == resource.RLIM_INFINITY else min(6 << 20, hard), hard))
for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
    signal.signal(s, signal.SIG_DFL)  # what a shell gives its commands
signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
if mode == "background":  # a non-interactive shell's `cmd &`
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGRTMIN + 2})
os.dup2(os.open("/dev/null", os.O_RDONLY), 7)
os.environ["CALLER_MARK"] = "caller \xe9"
os.nice(1)
if mode == "closed":  # `cmd <&- 2>&-`: whatever carbonrun opens may land on 0 and 2, and must not show
    os.close(0)
    os.close(2)
if mode.startswith("terminal:"):  # a session leader whose controlling terminal is on stdin and stdout
    os.setsid()
    tty = os.open(mode.split(":", 1)[1], os.O_RDWR)
    os.dup2(tty, 0)
    os.dup2(tty, 1)
    os.close(tty)
os.execvp(sys.argv[2], sys.argv[2:])
"""

STATE = "/proc/self/status"
SIGNAL_REPORT = (
    "import signal; "
    "print({int(s): str(signal.getsignal(s)) for s in signal.valid_signals() if s not in (9, 19)}); "
    "print(sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
)
BLOB = bytes(range(256)) * 64 + b"\x00\xff\r\n no newline at the end"

# (id, argv, stdin): each must behave identically directly and under carbonrun.
CORPUS: List[Tuple[str, List[str], Optional[bytes]]] = [
    ("status-signals", ["grep", "-E", "^(SigPnd|ShdPnd|SigBlk|SigIgn|SigCgt)", STATE], None),
    ("status-shell", ["sh", "-c", f"grep -E '^(SigBlk|SigIgn|SigCgt|NoNewPrivs|Seccomp|Cap|Cpus_allowed)' {STATE}"],
     None),
    ("python-signals", [sys.executable, "-c", SIGNAL_REPORT], None),
    ("ulimit-a", ["bash", "-c", "ulimit -a"], None),
    ("limits", ["cat", "/proc/self/limits"], None),
    ("umask", ["sh", "-c", "umask"], None),
    ("fds", ["ls", "/proc/self/fd"], None),
    ("fds-shell", ["sh", "-c", "ls /proc/$$/fd"], None),
    ("cwd", ["pwd", "-P"], None),
    ("env", ["env"], None),
    ("pgrp-session-tty", ["sh", "-c", "cut -d' ' -f5-8 /proc/$$/stat"], None),
    ("nice", ["nice"], None),
    ("oom-score", ["cat", "/proc/self/oom_score_adj"], None),  # the cgroup differs by design: docs/reliability.md
    ("yes-head-pipestatus", ["bash", "-c", "yes | head -c2 >/dev/null; echo ${PIPESTATUS[0]}"], None),
    ("endless-loop-head", ["bash", "-c", "while true; do echo x; done | head -1"], None),
    ("seq-head", ["sh", "-c", "seq 1 1000000 | head -n 3"], None),
    ("kill-pipe", ["sh", "-c", "kill -PIPE $$"], None),
    ("kill-xfsz", ["sh", "-c", "kill -XFSZ $$"], None),
    ("kill-alrm", ["sh", "-c", "kill -ALRM $$"], None),
    ("kill-term", ["sh", "-c", "kill -TERM $$"], None),
    ("kill-segv", ["sh", "-c", "kill -SEGV $$"], None),
    ("kill-rtmin", ["bash", "-c", "kill -s RTMIN+1 $$"], None),
    ("kill-hup-ignored", ["sh", "-c", "kill -HUP $$; echo survived"], None),
    ("kill-usr2-blocked", ["sh", "-c", "kill -USR2 $$; echo survived"], None),
    ("exit-0", ["true"], None),
    ("exit-1", ["false"], None),
    ("exit-42", ["sh", "-c", "exit 42"], None),
    ("exit-255", ["sh", "-c", "exit 255"], None),
    ("exit-256", ["sh", "-c", "exit 256"], None),
    ("stdin-to-stdout", ["cat"], BLOB),
    ("stdin-to-stderr", ["sh", "-c", "cat >&2"], BLOB),
    ("stdin-partial-read", ["sh", "-c", "head -c 5; echo; wc -c"], BLOB),
    ("stdin-is-not-a-tty", ["sh", "-c", "test -t 0; echo $?; test -t 1; echo $?"], b""),
    ("argv-bytes", ["printf", "[%s]", "", "a b", "new\nline", "\udcff\udcfe"], None),
    ("job-wait", ["bash", "-c", "sleep 0.01 & wait $!; echo $?"], None),
    ("job-kill", ["bash", "-c", "sleep 5 & kill -TERM $!; wait $!; echo $?"], None),
    ("job-control-set-m", ["bash", "-c", "set -m; sleep 0 & wait; echo ok"], None),
    ("trap-int", ["sh", "-c", "trap 'echo caught' INT; kill -INT $$; echo after"], None),
    ("closed-stdout", ["sh", "-c", "exec 1>&-; echo lost; echo $? >&2"], None),
    ("timeout-124", ["timeout", "0.1", "sleep", "5"], None),
    ("tty-termios", ["stty", "-g"], None),
    ("tty-relations", ["sh", "-c", 'set -- $(cut -d" " -f5-8 /proc/$$/stat); [ "$1" = "$2" ] && echo pgid=sid;'
                       ' [ "$1" = "$4" ] && echo foreground; [ "$3" != 0 ] && echo has-tty; test -t 0 && echo tty-in'],
     None),
]
# Other callers, for a few commands each: a background job's (INT and QUIT ignored); one with stdin and
# stderr closed; a session leader with a terminal on stdin and stdout.
MODES = {
    "background": ["status-signals", "python-signals", "trap-int"],
    "closed": ["fds", "fds-shell", "exit-42", "kill-pipe"],
    "terminal": ["tty-termios", "tty-relations", "status-signals", "fds"],
}
TOKEN = "TRANSPARENCY_RUN_TOKEN"
SUMMARY = re.compile(rb"carbonrun: (completed|failed|interrupted)[^\n]*\n\Z")


def _run(cli: CLI, mode: str, argv: List[str], stdin: Optional[bytes], wrapped: bool, cwd: Path):
    inner = cli.argv("--quiet", "--", *argv) if wrapped else argv
    if mode == "terminal":
        return _run_on_a_terminal(cli, inner, cwd)
    try:
        p = subprocess.run([sys.executable, "-c", CALLER, mode, *inner], input=stdin if stdin is not None else b"",
                           capture_output=True, timeout=15, env=cli.env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        _kill_leftovers(cli.env[TOKEN])
        return "timed out", e.stdout, e.stderr
    code = 128 - p.returncode if p.returncode < 0 else p.returncode  # what a shell's $? shows either way
    return code, p.stdout, p.stderr


def _run_on_a_terminal(cli: CLI, inner: List[str], cwd: Path):
    """Output read from the terminal's master side; the slave stays open here until the run ends, so the
    terminal does not hang up before the caller has opened it."""
    master, slave = os.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-c", CALLER, f"terminal:{os.ttyname(slave)}", *inner],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=cli.env, cwd=cwd)
        err = p.communicate(timeout=15)[1]
        out = b""
        while select.select([master], [], [], 0.05)[0]:
            out += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    return p.returncode, out, err


def _kill_leftovers(token: str) -> None:
    """A hung run's orphans (an endless `yes`) carry this module's token in their environment: end them."""
    needle = f"{TOKEN}={token}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Dict[Tuple[str, str], tuple]:
    """Every corpus entry run both ways, a few at a time (the whole corpus in a few seconds)."""
    home = tmp_path_factory.mktemp("transparency")
    (home / "no-powercap").mkdir()
    cwd = home / "work dir"
    cwd.mkdir()
    cli = CLI(home)
    cli.env[TOKEN] = uuid.uuid4().hex
    jobs = [(m, name, argv, stdin) for name, argv, stdin in CORPUS
            for m in ["normal", *(m for m, names in MODES.items() if name in names)]]

    def both(job):
        mode, name, argv, stdin = job
        return (mode, name), (_run(cli, mode, argv, stdin, False, cwd), _run(cli, mode, argv, stdin, True, cwd))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(both, jobs))


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30 and len({name for name, _, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("mode, name", [("normal", n) for n, _, _ in CORPUS]
                         + [(m, n) for m, names in MODES.items() for n in names])
def test_same_as_direct(results, mode, name):
    (code, out, err), (wcode, wout, werr) = results[(mode, name)]
    assert wcode == code, (werr.decode(errors="replace"), err.decode(errors="replace"))
    assert wout == out
    if mode == "closed":  # no stderr: carbonrun's summary has nowhere to go, and nothing else may appear
        assert werr == err == b""
    else:
        assert werr.startswith(err) and SUMMARY.fullmatch(werr[len(err):]), werr.decode(errors="replace")


def test_the_caller_state_is_really_unusual(results):
    """Guard the harness: the state compared above differs from Python's and the shell's defaults."""
    (code, out, _), _ = results[("normal", "status-signals")]
    fields = dict(line.split(":\t") for line in out.decode().splitlines())
    ignored, blocked = int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)
    assert ignored & (1 << 0) and not ignored & (1 << 12)  # SIGHUP ignored, SIGPIPE default
    assert blocked & (1 << 11)  # SIGUSR2
    assert results[("normal", "umask")][0][1] == b"0027\n"
    assert results[("normal", "yes-head-pipestatus")][0][1] == b"141\n"
    assert results[("normal", "kill-pipe")][0][0] == 141
    assert b" 7\n" in b" " + results[("normal", "fds")][0][1].replace(b"\n", b"\n ")
    tty = results[("terminal", "tty-relations")][0][1].split()
    assert tty == [b"pgid=sid", b"foreground", b"has-tty", b"tty-in"], tty
    assert results[("closed", "fds")][0][1].split() == [b"0", b"1", b"7"]  # 0 is ls's own directory; 2 closed
    (_, bg, _), _ = results[("background", "status-signals")]
    assert int(dict(x.split(":\t") for x in bg.decode().splitlines())["SigIgn"], 16) & 0b110  # INT, QUIT


def test_no_carbonrun_fd_reaches_the_command(results):
    """The store, NVML and sockets are carbonrun's own: the command sees only 0, 1, 2 and the caller's 7."""
    _, (code, out, err) = results[("normal", "fds-shell")]
    assert code == 0 and out.split() == [b"0", b"1", b"2", b"7"], err.decode()


def test_a_script_without_a_shebang_runs_as_under_env(cli, tmp_path):
    """execvp (env, nice, timeout, every shell) hands a script with no #! line to /bin/sh; so does carbonrun."""
    script = tmp_path / "build"
    script.write_text('echo "$# args: $*"\nexit 5\n')
    script.chmod(0o755)
    direct = subprocess.run(["env", str(script), "a b", "c"], capture_output=True)
    assert direct.returncode == 5 and direct.stdout == b"2 args: a b c\n"
    p = cli("--quiet", "--", str(script), "a b", "c")
    assert (p.returncode, p.stdout) == (5, direct.stdout), p.stderr.decode()
    found = cli("--quiet", "--", "build", env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})  # through PATH
    assert (found.returncode, found.stdout) == (5, b"0 args: \n"), found.stderr.decode()

