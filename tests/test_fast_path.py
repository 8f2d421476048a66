"""The click-free fast path parses run options exactly as click does, or hands the line to click."""
from __future__ import annotations

import subprocess
import sys
from typing import Any, Dict, List, Optional

import pytest

from carbonrun.cli import fast
from carbonrun.cli.run import run as run_command

SAME = [
    ["true"],
    ["--quiet", "--", "true"],
    ["-q", "sh", "-c", "exit 3"],
    ["--interval", "0.5", "--pue=1.2", "--tag", "a=1", "--tag=b=2", "true", "--quiet"],
    ["run", "--region", "FR", "--", "report", "last"],
    ["run", "report"],
    ["--attribution", "machine", "--no-live", "--json", "out.json", "--embodied", "true"],
    ["--now", "--start-within", "2h", "--expected-duration=1h", "true"],
    ["--store", "/tmp/x.sqlite", "--", "--weird-name"],
    ["--debug", "true"], ["--quiet", "--debug", "--", "true"], ["run", "--region", "FR", "--debug", "true"],
]
TO_CLICK = [
    [], ["--help"], ["-h"], ["--version"], ["report", "last"], ["--quiet", "history"], ["run"],
    ["--interval"], ["--attribution", "nobody", "true"], ["--quiet=yes", "true"], ["--no-such-option", "true"],
    ["reprot"], ["run", "--help", "true"], ["--"],
]


def click_parse(args: List[str]) -> Optional[tuple]:
    """What click's `run` would call measure_options with for this line (bare lines routed as the group does)."""
    if args and args[0] == "run":
        args = args[1:]
    ctx = run_command.make_context("run", list(args))
    params: Dict[str, Any] = dict(ctx.params)
    command = list(params.pop("command"))
    return command, {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()
                     if v not in (None, (), False)}


@pytest.mark.parametrize("args", SAME, ids=" ".join)
def test_fast_path_agrees_with_click(args):
    parsed = fast.parse(args)
    assert parsed is not None
    command, params = parsed
    assert (command, params) == click_parse(args)


@pytest.mark.parametrize("args", TO_CLICK, ids=lambda a: " ".join(a) or "(empty)")
def test_everything_else_goes_to_click(args):
    assert fast.parse(args) is None


def test_a_first_word_not_on_path_goes_to_click(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert fast.parse(["ls"]) is None
    (tmp_path / "ls").write_text("#!/bin/sh\n")
    (tmp_path / "ls").chmod(0o755)
    assert fast.parse(["ls"]) == (["ls"], {})


def test_a_measured_run_never_imports_click(cli):
    p = cli("--quiet", "--", "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert p.returncode == 0, p.stderr.decode()
    imported = {line.split("|")[-1].strip() for line in p.stderr.decode().splitlines() if "import time" in line}
    assert "carbonrun.cli.fast" in imported
    assert not {m for m in imported if m == "click" or m.startswith("click.")}


def test_usage_errors_read_the_same_on_both_paths(cli):
    fast_line = cli("--interval", "abc", "--quiet", "true").stderr.decode().strip().splitlines()[-1]
    click_line = cli("run", "--interval", "abc", "--quiet", "--", "true").stderr.decode().strip().splitlines()[-1]
    assert fast_line == click_line and fast_line.startswith("carbonrun: error:")


def test_exit_code_of_the_command_on_the_fast_path(cli):
    assert cli("--quiet", sys.executable, "-c", "raise SystemExit(7)").returncode == 7
    assert cli("--quiet", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_the_cli_package_itself_is_click_free():
    code = "import sys, carbonrun.cli, carbonrun.cli.fast; sys.exit('click' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_debug_is_taken_anywhere_before_the_command(cli):
    fast_run = cli("--quiet", "--debug", "--region", "Atlantis", "--", "true")  # the fast path
    assert fast_run.returncode != 0 and b"Traceback" in fast_run.stderr and b"Atlantis" in fast_run.stderr
    store = str(cli.home / "runs.sqlite")
    assert cli("--quiet", "--store", store, "--", "true").returncode == 0
    click_run = cli("--store", store, "--debug", "report", "999")  # moved to the group: click's path
    assert b"Traceback" in click_run.stderr and b"999" in click_run.stderr, click_run.stderr
    assert b"Traceback" not in cli("--store", store, "report", "999").stderr
