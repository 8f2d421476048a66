"""The live table in a real terminal (tmux): pinned at the bottom, the child's lines intact."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

CHILD = ("import time\nfor i in range(60):\n    print(f'child line {i:02d} ' + 'x' * 40, flush=True); "
         "time.sleep(0.05)\ntime.sleep(1)")


def _pane(sock: str) -> str:
    return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout


def test_live_table_is_pinned_and_child_output_is_not_garbled(cli, tmp_path):
    sock = str(tmp_path / "tmux.sock")
    keep = ("CARBONRUN_", "XDG_", "HOME", "PYTHONPATH")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli.env.items() if k.startswith(keep))
    cmd = f"env {env} {sys.executable} -m carbonrun {sys.executable} -c {shlex.quote(CHILD)}; echo EXIT=$?; sleep 30"
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-x", "100", "-y", "24", cmd], check=True)
    try:
        time.sleep(2.2)
        during = _pane(sock).splitlines()
        for _ in range(100):
            after = _pane(sock)
            if "EXIT=" in after:
                break
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    table_at = [i for i, line in enumerate(during) if line.startswith("── carbonrun")]
    assert table_at and table_at[0] >= len(during) - 8, during  # pinned at the bottom
    child = [line for line in during if line.startswith("child line")]
    assert len(child) >= 5
    assert all(line.rstrip().endswith("x" * 40) for line in child)  # no line overwritten by the table
    assert "EXIT=0" in after and "emissions" in after
