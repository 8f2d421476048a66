"""The live table in a real terminal (tmux): pinned at the bottom, the child's lines intact."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CHILD = ("import time\nfor i in range(60):\n    print(f'child line {i:02d} ' + 'x' * 40, flush=True); "
         "time.sleep(0.05)\ntime.sleep(1)")


def _pane(sock: str, joined: bool = False) -> str:
    """The pane's text; `joined`: lines the terminal wrapped are joined back (what was written)."""
    flags = "-pJ" if joined else "-p"
    return subprocess.run(["tmux", "-S", sock, "capture-pane", flags], capture_output=True, text=True).stdout


def _in_tmux(cli, tmp_path, columns: int, lines: int = 24, joined: bool = False) -> "tuple[list, str]":
    """The pane while the child runs (lines), and after carbonrun exited (text)."""
    sock = str(tmp_path / "tmux.sock")
    keep = ("CARBONRUN_", "XDG_", "HOME", "PYTHONPATH")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli.env.items() if k.startswith(keep))
    cmd = f"env {env} {sys.executable} -m carbonrun {sys.executable} -c {shlex.quote(CHILD)}; echo EXIT=$?; sleep 30"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", str(columns), "-y", str(lines), cmd], check=True)
    try:
        time.sleep(2.2)
        during = _pane(sock).splitlines()
        for _ in range(100):
            after = _pane(sock, joined)
            if "EXIT=" in after:
                break
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    return during, after


def test_live_table_is_pinned_and_child_output_is_not_garbled(cli, tmp_path):
    during, after = _in_tmux(cli, tmp_path, 100)
    table_at = [i for i, line in enumerate(during) if line.startswith("── carbonrun")]
    assert table_at and table_at[0] >= len(during) - 8, during  # pinned at the bottom
    child = [line for line in during if line.startswith("child line")]
    assert len(child) >= 5
    assert all(line.rstrip().endswith("x" * 40) for line in child)  # no line overwritten by the table
    assert "EXIT=0" in after and "emissions" in after


FIGURE = r"~?\d[\d,]*(\.\d+)? (W|J|Wh|kWh)"


def test_at_40_columns_every_value_is_whole(cli, tmp_path):
    during, after = _in_tmux(cli, tmp_path, 40, lines=60)  # room for the whole summary
    at = next(i for i, line in enumerate(during) if line.startswith("── carbonrun"))
    title, head, rows = during[at], during[at + 1], [r for r in during[at + 2:] if r.strip()]
    assert re.search(r"carbonrun \d+\.\d+ s · " + FIGURE + " ─", title), title  # figures dropped, never cut
    assert head.split() == ["power", "job", "machine"] and rows, during  # the source column went first
    for row in rows:  # name, then each figure whole
        assert re.fullmatch(rf"\S[\w -]* +{FIGURE} +{FIGURE} +{FIGURE}", row.rstrip()), row
        power = row.split()[1]  # an estimate's power at the two digits its range allows, like its energy
        assert not power.startswith("~") or len(power.strip("~").replace(".", "").lstrip("0")) <= 2, row
    summary = after[after.index("carbonrun run #"):]
    assert "\u2026" not in summary and all(len(line) <= 40 for line in summary.splitlines())
    assert re.search(r"emissions +~?\d[\d.]* mg CO2eq", summary)


def test_below_40_columns_the_summary_still_fits_the_terminal(cli, tmp_path):
    _, after = _in_tmux(cli, tmp_path, 30, lines=80, joined=True)
    summary = after[after.index("carbonrun run #"):after.index("EXIT=")]
    assert all(len(line) <= 30 for line in summary.splitlines()), summary  # the terminal never wraps a figure
    assert re.search(r"~?\d[\d.]* mg CO2eq", summary), summary
