"""`history`, `report`, `compare`, `rm`, `prune` as a user types them: the real CLI in a subprocess."""
from __future__ import annotations

import csv
import io
import json
import re
import time
from datetime import date, timedelta
from typing import List

import pytest

from carbonrun.report import units
from carbonrun.store.sqlite import Store


def ids(cli, *args: str, env=None) -> List[int]:
    p = cli("history", "--format", "json", *args, env=env)
    assert p.returncode == 0, p.stderr.decode()
    return [r["id"] for r in json.loads(p.stdout)]


def run(cli, *args: str, env=None) -> None:
    p = cli("--quiet", *args, env=env)
    assert p.returncode in (0, 3), p.stderr.decode()


def one_error_line(p) -> str:
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def three(cli):
    """Runs 1 (exp=a), 2 (exp=b seed=1, failed), 3 (exp=a)."""
    run(cli, "--tag", "exp=a", "sh", "-c", "true")
    run(cli, "--tag", "exp=b", "--tag", "seed=1", "sh", "-c", "exit 3")
    run(cli, "--tag", "exp=a", "python3", "-c", "pass")
    return cli


def old_run(cli, days_ago: float, n: int = 1) -> None:
    """A run stored as if it had started `days_ago` days ago (a user cannot make one without waiting)."""
    rec = json.loads(cli("report", "last", "-f", "json").stdout)
    st = Store(cli.home / "store" / "runs.sqlite")
    for i in range(n):
        rec.update(uuid=f"00000000-0000-4000-8000-{int(days_ago * 1000) + i:012d}", status="completed")
        st.begin(dict(rec), time.time() - days_ago * 86400)
    st.close()


# -- history ---------------------------------------------------------------------------------------------
def test_history_filters(three):
    cli = three
    assert ids(cli) == [3, 2, 1]
    assert ids(cli, "--tag", "exp=a") == [3, 1]
    assert ids(cli, "--tag", "exp=b", "--tag", "seed=1") == [2]
    assert ids(cli, "--tag", "exp=b", "--tag", "seed=2") == []
    assert ids(cli, "--command", "EXIT 3") == [2]
    assert ids(cli, "--status", "failed") == [2]
    assert ids(cli, "--status", "completed", "--limit", "1") == [3]


def test_history_table_is_one_line_per_run(three):
    p = three("history")
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["id", "started", "status"]
    assert len(lines) == 1 + 3 + 1 and lines[-1] == "~ estimated"  # header, runs, the legend of `~`
    assert "exp=b seed=1" in lines[2] and "failed" in lines[2] and "exit 3" in lines[2]
    assert all(line == line.rstrip() for line in lines)  # piped: no padding, no wrapping


def test_history_marks_estimates_and_fits_a_narrow_terminal(three):
    from carbonrun.cli.history import history_table

    records = [three.record(str(i)) for i in (3, 2, 1)]
    assert all(r["components"] and all(c["estimated"] for c in r["components"]) for r in records)
    wide = history_table(records, False, 100).splitlines()
    assert all(re.search(r"  ~\d[\d.,]* (J|Wh|kWh)  +~\d[\d.,]* (mg|g|kg) ", line) for line in wide[1:4]), wide
    narrow = history_table(records, False, 40).splitlines()
    assert all(len(line) <= 40 for line in narrow) and "\u2026" not in "".join(narrow)
    for r in records:  # every figure is still there, whole
        energy = "~" + units.figures(r)["energy_value"]
        assert any(energy in line for line in narrow), (energy, narrow)


def test_history_since_relative_and_iso(cli):
    run(cli, "true")
    old_run(cli, 30)
    assert ids(cli) == [2, 1]
    assert ids(cli, "--since", "7d") == [1]
    assert ids(cli, "--since", "800h") == [2, 1]
    assert ids(cli, "--since", (date.today() - timedelta(days=40)).isoformat()) == [2, 1]
    assert ids(cli, "--since", (date.today() + timedelta(days=1)).isoformat()) == []
    p = cli("history", "--since", "last tuesday")
    assert p.returncode == 2 and b"--since" in p.stderr and b"Traceback" not in p.stderr


@pytest.mark.parametrize("fmt", ["csv", "codecarbon"])
def test_history_as_csv(three, fmt):
    p = three("history", "--format", fmt)
    assert p.returncode == 0, p.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(p.stdout.decode())))
    assert len(rows) == 3
    key = "id" if fmt == "csv" else "run_id"
    want = ["3", "2", "1"] if fmt == "csv" else [three.record(str(i))["uuid"] for i in (3, 2, 1)]
    assert [r[key] for r in rows] == want


def test_history_as_markdown(three):
    p = three("history", "-f", "markdown", "--limit", "2")
    text = p.stdout.decode().splitlines()
    assert text[0].startswith("| Run |") and len(text) == 4 + 2 and text[-1] == "\\~ estimated"
    assert text[2].startswith("| 3 |") and text[3].startswith("| 2 |") and "| \\~" in text[3]


def test_history_of_an_empty_store(cli):
    p = cli("history")
    assert p.returncode == 0 and p.stdout == b"" and b"no runs stored yet" in p.stderr
    assert not (cli.home / "store").exists()  # looking creates nothing
    assert json.loads(cli("history", "-f", "json").stdout) == []


def test_history_to_a_file(three, tmp_path):
    out = tmp_path / "runs.csv"
    p = three("history", "-f", "csv", "-o", str(out))
    assert p.returncode == 0 and p.stdout == b""
    assert len(out.read_text().splitlines()) == 4


# -- report ----------------------------------------------------------------------------------------------
def test_report_references(three):
    cli = three
    assert cli.record("-2")["id"] == 2
    assert cli.record("-3")["id"] == 1
    uuid = cli.record("1")["uuid"]
    assert cli.record(uuid[:8])["id"] == 1
    p = cli("report", "99")
    assert p.returncode == 2 and "no run '99'" in one_error_line(p) and "carbonrun history" in one_error_line(p)
    p = cli("report", "--bogus")
    assert p.returncode == 2 and b"No such option" in p.stderr


def test_report_on_a_store_that_does_not_exist(cli):
    p = cli("report", "last")
    assert p.returncode == 1 and "no runs stored yet" in one_error_line(p)


# -- compare ---------------------------------------------------------------------------------------------
def test_compare_ratios(cli):
    run(cli, "sleep", "0.3")
    run(cli, "sleep", "1")
    a, b = cli.record("1"), cli.record("2")
    p = cli("compare", "1", "2", "--format", "json")
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads(p.stdout)
    assert doc["a"]["id"] == 1 and doc["b"]["id"] == 2
    m = {row["name"]: row for row in doc["metrics"]}
    assert m["energy"]["ratio"] == pytest.approx(b["energy"]["total_kwh"] / a["energy"]["total_kwh"])
    assert m["duration"]["ratio"] == pytest.approx(b["duration_s"] / a["duration_s"]) and m["duration"]["ratio"] > 2
    assert m["emissions"]["a"] == a["emissions"]["kg"]
    for comp in {c["component"] for c in a["components"]}:
        assert f"{comp} energy" in m

    table = cli("compare", "-2", "last").stdout.decode()
    assert "B/A" in table and "energy" in table and f"{units.sig(m['duration']['ratio'], 3)}x" in table
    md = cli("compare", "1", "2", "-f", "markdown").stdout.decode()
    assert "| energy |" in md and "| B/A |" in md


def test_compare_unknown_run(cli):
    run(cli, "true")
    p = cli("compare", "1", "7")
    assert p.returncode == 2 and "no run '7'" in one_error_line(p)


# -- rm and prune ----------------------------------------------------------------------------------------
def test_rm_removes_and_says_so(three):
    cli = three
    p = cli("rm", "1", "3")
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("removed run #1 ") and lines[1].startswith("removed run #3 ")
    assert ids(cli) == [2]


def test_rm_unknown_id_removes_nothing(three):
    p = three("rm", "2", "42")
    assert p.returncode == 2 and "no run '42'" in one_error_line(p)
    assert p.stdout == b""
    assert ids(three) == [3, 2, 1]


def test_prune_keep_and_dry_run(three):
    cli = three
    p = cli("prune", "--keep", "1", "--dry-run")
    assert p.returncode == 0 and "would remove 2 runs (#1-#2)" in p.stdout.decode()
    assert ids(cli) == [3, 2, 1]
    p = cli("prune", "--keep", "1")
    assert p.returncode == 0 and p.stdout.decode() == "removed 2 runs (#1-#2); 1 left\n"
    assert ids(cli) == [3]


def test_prune_older_than(cli):
    run(cli, "true")
    old_run(cli, 100, n=2)
    old_run(cli, 10)
    p = cli("prune", "--older-than", "30")
    assert p.returncode == 0 and p.stdout.decode().startswith("removed 2 runs")
    assert ids(cli) == [4, 1]


def test_prune_needs_an_option(cli):
    p = cli("prune")
    assert p.returncode == 2 and b"--keep" in p.stderr


# -- common to all -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["history", "report", "compare", "rm", "prune"])
def test_help_has_examples(cli, command):
    p = cli(command, "--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "Examples:" in out and f"carbonrun {command}" in out.split("Examples:")[1] and "--store" in out


def test_store_from_flag_env_and_project_config(cli, tmp_path):
    flag_store, env_store = tmp_path / "flag.sqlite", tmp_path / "env.sqlite"
    run(cli, "--store", str(flag_store), "true")
    run(cli, "true", env={"CARBONRUN_STORE": str(env_store)})
    assert ids(cli, "--store", str(flag_store)) == [1] and flag_store.exists()
    assert ids(cli, env={"CARBONRUN_STORE": str(env_store)}) == [1]
    assert not (cli.home / "store").exists()  # neither went to the default store

    project = tmp_path / "proj"
    project.mkdir()
    (project / "carbonrun.toml").write_text(f'store = "{project / "proj.sqlite"}"\n')  # inside the project
    assert cli("--quiet", "true", cwd=project).returncode == 0
    p = cli("history", "-f", "json", cwd=project)
    assert [r["id"] for r in json.loads(p.stdout)] == [1] and (project / "proj.sqlite").exists()


def test_run_ids_complete_in_the_shell(three):
    p = three("rm", env={"_CARBONRUN_COMPLETE": "bash_complete", "COMP_WORDS": "carbonrun rm ", "COMP_CWORD": "2"})
    assert p.stdout.decode().split() == ["plain,last", "plain,3", "plain,2", "plain,1"]
    p = three("compare", env={"_CARBONRUN_COMPLETE": "bash_complete", "COMP_WORDS": "carbonrun compare 1 ",
                              "COMP_CWORD": "3"})
    assert "plain,2" in p.stdout.decode().split()


def test_rm_refuses_a_run_still_being_measured(cli):
    import os
    import signal
    import subprocess

    p = subprocess.Popen(cli.argv("--quiet", "sleep", "30"), env=cli.env, cwd=cli.home,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            if (cli.home / "store" / "runs.sqlite").exists() and cli("history", "--status", "running").stdout:
                break
            time.sleep(0.1)
        r = cli("rm", "last")
        assert r.returncode == 1 and "still being measured" in one_error_line(r)
        assert ids(cli, "--status", "running") == [1]
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=20)
