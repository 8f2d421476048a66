"""`carbonrun run` as a user runs it: a real subprocess, real children, real signals."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest


def test_estimated_summary_on_a_machine_without_counters(cli):
    p = cli("--no-live", sys.executable, "-c", "sum(range(10**6))")
    assert p.returncode == 0, p.stderr.decode()
    err = p.stderr.decode()
    assert "estimated" in err and "CO2eq" in err and "social cost" in err
    assert p.stdout == b""
    rec = cli.record()
    assert rec["schema"] == "carbonrun.run/1"
    assert rec["status"] == "completed" and rec["exit_code"] == 0
    cpu = [c for c in rec["components"] if c["component"] == "cpu"]
    assert cpu and all(c["estimated"] for c in cpu)
    assert cpu[0]["machine_j"] > 0 and cpu[0]["low_j"] < cpu[0]["job_j"] < cpu[0]["high_j"]
    assert any("estimated energy" in n for n in rec["notes"])
    assert rec["energy"]["total_kwh"] > 0 and rec["emissions"]["kg"] > 0
    assert rec["usage"]["job_cpu_s"] > 0


@pytest.mark.parametrize("argv, code", [
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "kill -9 $$"], 137),
    (["definitely-not-a-program-xyz"], 127),
])
def test_exit_codes(cli, argv, code):
    p = cli("--quiet", "--", *argv)
    assert p.returncode == code, p.stderr.decode()


def test_not_executable_is_126(cli, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    p = cli("--quiet", str(script))
    assert p.returncode == 126
    assert b"permission denied" in p.stderr and b"Traceback" not in p.stderr


def test_missing_program_is_one_line(cli):
    p = cli("nope-not-here")
    assert p.returncode == 127
    assert p.stderr.decode().strip().splitlines() == ["carbonrun: error: command not found: nope-not-here"]


def test_failed_status_recorded(cli):
    cli("--quiet", "sh", "-c", "exit 3")
    rec = cli.record()
    assert rec["status"] == "failed" and rec["exit_code"] == 3


def test_binary_pipe_is_untouched(cli, tmp_path):
    data = os.urandom(50 * 2**20)
    p = cli("--", "cat", input=data)
    assert p.returncode == 0
    assert hashlib.sha256(p.stdout).digest() == hashlib.sha256(data).digest()
    assert b"carbonrun" in p.stderr


def test_sigint_to_carbonrun_reaches_child_and_run_is_interrupted(cli, tmp_path):
    marker = tmp_path / "got-int"
    child = textwrap.dedent(f"""
        import signal, sys, time
        def h(*a):
            open({str(marker)!r}, "a").write("INT\\n"); sys.exit(130)
        signal.signal(signal.SIGINT, h)
        print("ready", flush=True)
        time.sleep(30)
    """)
    p = subprocess.Popen(cli.argv("--quiet", sys.executable, "-c", child), env=cli.env, cwd=cli.home,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert p.stdout.readline() == b"ready\n"
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, err.decode()
    assert marker.read_text() == "INT\n"  # forwarded exactly once
    assert cli.record()["status"] == "interrupted"


def test_sigterm_forwarded_and_child_killed_by_it(cli):
    p = subprocess.Popen(cli.argv("--quiet", "sleep", "30"), env=cli.env, cwd=cli.home,
                         stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(0.8)
    os.kill(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM
    assert cli.record()["status"] == "interrupted"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_ctrl_c_in_a_terminal_reaches_python_child_once(cli, tmp_path):
    marker = tmp_path / "ints"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(f"""
        import signal, time, sys
        def h(*a):
            open({str(marker)!r}, "a").write("INT\\n")
        signal.signal(signal.SIGINT, h)
        print("ready", flush=True)
        t = time.time()
        while time.time() - t < 2.5:
            time.sleep(0.05)
        sys.exit(0)
    """))
    sock = str(tmp_path / "tmux.sock")
    env_prefix = " ".join(f"{k}={shlex_quote(v)}" for k, v in cli.env.items()
                          if k.startswith(("CARBONRUN_", "XDG_", "HOME", "PYTHONPATH", "NO_COLOR")))
    cmd = f"env {env_prefix} {sys.executable} -m carbonrun --quiet {sys.executable} {script}; echo EXIT=$? ; sleep 30"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "120", "-y", "30", cmd], check=True)
    try:
        for _ in range(100):
            pane = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "ready" in pane:
                break
            time.sleep(0.1)
        subprocess.run(["tmux", "-S", sock, "send-keys", "C-c"], check=True)
        for _ in range(100):
            pane = subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout
            if "EXIT=" in pane:
                break
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    assert "EXIT=0" in pane, pane
    assert marker.read_text() == "INT\n"


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def test_sixteen_concurrent_runs_all_land(cli):
    with ThreadPoolExecutor(16) as pool:
        procs = list(pool.map(lambda i: cli("--quiet", "--tag", f"n={i}", "--", "sh", "-c", "sleep 0.2"),
                              range(16)))
    assert all(p.returncode == 0 for p in procs), [p.stderr.decode() for p in procs if p.returncode]
    p = cli("history", "--format", "json", "--limit", "100")
    assert p.returncode == 0, p.stderr.decode()
    assert len(json.loads(p.stdout)) == 16
    ids = {cli.record(str(i))["tags"]["n"] for i in range(1, 17)}
    assert ids == {str(i) for i in range(16)}


def test_json_file_and_tags(cli, tmp_path):
    out = tmp_path / "rec.json"
    p = cli("--quiet", "--json", str(out), "--tag", "exp=a", "--tag", "seed=1", "true")
    assert p.returncode == 0, p.stderr.decode()
    rec = json.loads(out.read_text())
    assert rec["tags"] == {"exp": "a", "seed": "1"}
    assert rec == cli.record()  # the file and the store hold the same record


def test_options_read_from_environment(cli):
    p = cli("--quiet", "true", env={"CARBONRUN_INTENSITY": "123", "CARBONRUN_PUE": "1.5"})
    assert p.returncode == 0, p.stderr.decode()
    rec = cli.record()
    assert rec["intensity"]["g_per_kwh"] == 123 and rec["energy"]["pue"] == 1.5


def test_bad_option_value_is_a_usage_error(cli):
    p = cli("--interval", "0", "true")
    assert p.returncode == 2
    assert b"interval" in p.stderr and b"Traceback" not in p.stderr


def test_subcommand_name_runs_as_program_with_run(cli):
    p = cli("run", "--quiet", "--", "sh", "-c", "echo report")
    assert p.returncode == 0 and p.stdout == b"report\n"


def test_version(cli):
    from carbonrun import __version__

    p = cli("--version")
    assert p.returncode == 0 and __version__.encode() in p.stdout


def test_orphaned_grandchild_cpu_is_the_jobs(cli):
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass"
    # The subshell exits at once: the burning python is orphaned and comes back to carbonrun.
    script = f"( {sys.executable} -c '{burn}' & ) ; sleep 1.2"
    p = cli("--quiet", "--", "sh", "-c", script)
    assert p.returncode == 0, p.stderr.decode()
    assert cli.record()["usage"]["job_cpu_s"] >= 0.45


def test_json_dash_writes_the_record_to_stdout_after_the_commands_output(cli):
    p = cli("--quiet", "--json", "-", "--", "sh", "-c", "echo out")
    assert p.returncode == 0, p.stderr.decode()
    first, rest = p.stdout.split(b"\n", 1)
    assert first == b"out" and json.loads(rest) == cli.record()
    assert not (cli.home / "-").exists()


def test_a_failed_metrics_export_is_a_warning_line_even_when_quiet(cli, tmp_path):
    p = cli("--quiet", "--prometheus-textfile", str(tmp_path / "no" / "such" / "dir"), "--", "sh", "-c", "exit 4")
    assert p.returncode == 4
    lines = p.stderr.decode().splitlines()
    assert any(line.startswith("carbonrun: warning: could not write the Prometheus textfile") for line in lines), lines
