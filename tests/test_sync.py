"""`carbonrun sync` brings back the records a failed store could not take: each once, only after the
store has it, and never a damaged file. The faults are real (a read-only mount, a refused path), the
CLI runs as a subprocess."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import List

import pytest

from carbonrun.store import kept
from tests.test_faults import in_namespace, needs_namespaces

STORE = '"$CARBONRUN_HOME"'
OTHER_UID = 54321


@pytest.fixture
def cli(cli):
    """The CLI with a temporary directory of its own: the last fallback place is $TMPDIR's."""
    (cli.home / "tmp").mkdir(exist_ok=True)
    cli.env["TMPDIR"] = str(cli.home / "tmp")
    return cli


def kept_files(cli) -> List[Path]:
    """The kept-aside files in every place carbonrun may keep them for this CLI's environment."""
    files, refused = kept.pending(cli.env)
    assert not refused
    return files


def history(cli) -> List[dict]:
    p = cli("history", "--format", "json", "--limit", "0")
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def refused_run(cli, *command: str) -> dict:
    """A run whose store is refused (a directory given as the store file): its record is kept aside."""
    bad = cli.home / "not-a-file"
    bad.mkdir(exist_ok=True)
    p = cli("--quiet", "--store", str(bad), "--", *command)
    assert "carbonrun sync" in p.stderr.decode(), p.stderr.decode()  # the line saying where it went
    [path] = [f for f in kept_files(cli) if json.loads(f.read_text())["command"] == list(command)]
    return json.loads(path.read_text())


@needs_namespaces
def test_a_record_kept_aside_by_a_read_only_store_is_imported_once(cli):
    ro = cli.home / "ro"
    p = in_namespace(cli, f"mkdir -p {ro}; mount -t tmpfs -o ro tmpfs {ro}",
                     "--quiet", "--store", str(ro / "runs.sqlite"), "--", "sh", "-c", "exit 3")
    err = p.stderr.decode()
    assert p.returncode == 3, err
    [path] = kept_files(cli)
    assert path.parent == Path(cli.env["CARBONRUN_HOME"]) / "kept" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"written to {path} until `carbonrun sync` imports it" in err, err
    uuid = json.loads(path.read_text())["uuid"]

    s = cli("sync")  # the default store, which works
    out = s.stdout.decode()
    assert s.returncode == 0, s.stderr.decode()
    assert f"imported run {uuid[:8]} (failed): sh -c exit 3 from {path}" in out, out
    assert out.splitlines()[-1].startswith("imported 1 kept-aside run(s) into ") and "0 left in place" in out
    assert not path.exists() and kept_files(cli) == []
    last = cli.record("last")
    assert last["uuid"] == uuid and last["exit_code"] == 3 and last["status"] == "failed"
    assert any("imported by `carbonrun sync`" in n for n in last["notes"])

    again = cli("sync")
    assert again.returncode == 0 and again.stdout.startswith(b"nothing to sync"), again.stdout
    assert [r["uuid"] for r in history(cli)] == [uuid]


@needs_namespaces
def test_a_disk_that_fills_mid_run_and_is_freed_gets_the_final_record_from_the_fallback_place(cli, tmp_path):
    """The start went into the store, the final record did not (the disk filled), nor into the data
    directory (the same disk): it waits in the XDG state directory, and sync completes the run."""
    wait = tmp_path / "wait_for_the_start.py"  # until the running record is in the store
    wait.write_text("import os, sqlite3, time\n"
                    "db = sqlite3.connect(os.environ['CARBONRUN_HOME'] + '/runs.sqlite', timeout=5)\n"
                    "while not db.execute(\"SELECT count(*) FROM runs WHERE status = 'running'\").fetchone()[0]:\n"
                    "    time.sleep(0.01)\n")
    cr, out = " ".join(cli.argv()), tmp_path
    script = (f"mkdir -p {STORE}; mount -t tmpfs -o size=400k tmpfs {STORE}; {cr} --quiet true;"
              f" {cr} --quiet -- sh -c '{sys.executable} {wait}; head -c 10M /dev/zero > {STORE}/fill 2>/dev/null;"
              f" exit 4' 2> {out}/run.err || echo $? > {out}/run.rc;"
              f" rm {STORE}/fill; {cr} sync > {out}/sync.out 2>&1 || echo $? > {out}/sync.rc")
    p = in_namespace(cli, script, "history", "--format", "json", "--limit", "0")
    err = (out / "run.err").read_text()
    assert p.returncode == 0 and (out / "run.rc").read_text() == "4\n", err + p.stderr.decode()
    fallback = cli.home / ".local" / "state" / "carbonrun" / "kept"
    assert f"written to {fallback}/carbonrun-" in err and "until `carbonrun sync`" in err, err
    synced = (out / "sync.out").read_text()
    assert not (out / "sync.rc").exists() and "completed run " in synced and "imported 1 " in synced, synced
    runs = json.loads(p.stdout)
    assert len(runs) == 2 and len({r["uuid"] for r in runs}) == 2  # replaced, not added
    assert runs[0]["status"] == "failed" and runs[0]["exit_code"] == 4
    assert kept_files(cli) == []


def test_a_damaged_file_stays_where_it_is_and_is_named(cli):
    good = refused_run(cli, "sh", "-c", "exit 0")
    place = Path(cli.env["CARBONRUN_HOME"]) / "kept"
    damaged = {place / "carbonrun-0badf11e-0000-4000-8000-000000000000.json": b'{"schema": ',
               place / "carbonrun-not-a-record.json": b'{"schema": "someone else", "uuid": "x"}',
               place / "carbonrun-nan.json": json.dumps({**good, "uuid": "0badf11e-0000-4000-8000-000000000001",
                                                         "energy": {"total_kwh": "lots"}}).encode()}
    for f, body in damaged.items():
        f.write_bytes(body)
        os.chmod(f, 0o600)
    for _ in range(2):  # the second time too: a damaged file is never deleted
        s = cli("sync")
        err = s.stderr.decode()
        assert s.returncode == 1, err
        lines = err.splitlines()
        assert len(lines) == 3 and all(line.startswith("carbonrun: warning: ") for line in lines), err
        for f in damaged:
            assert sum(str(f) in line and "left in place: damaged" in line for line in lines) == 1, err
        assert all(f.read_bytes() == body for f, body in damaged.items())
        assert "3 left in place" in s.stdout.decode().splitlines()[-1]
    assert [r["uuid"] for r in history(cli)] == [good["uuid"]]  # the good one went in, once


def test_a_run_already_in_the_store_is_not_stored_twice(cli):
    assert cli("--quiet", "sh", "-c", "exit 0").returncode == 0
    stored = cli.record("last")
    place = Path(cli.env["CARBONRUN_HOME"]) / "kept"
    place.mkdir(mode=0o700)
    copy = place / f"carbonrun-{stored['uuid']}.json"  # a sync that stopped between the insert and the removal
    copy.write_text(json.dumps(stored))
    s = cli("sync")
    assert s.returncode == 0, s.stderr.decode()
    assert f"already stored: run {stored['uuid'][:8]}" in s.stdout.decode() and not copy.exists()
    assert "imported 0 kept-aside run(s)" in s.stdout.decode() and "1 already stored" in s.stdout.decode()
    assert [r["uuid"] for r in history(cli)] == [stored["uuid"]]
    assert cli.record("last") == stored


def test_a_store_that_keeps_nothing_cannot_take_them(cli):
    rec = refused_run(cli, "true")
    p = cli("sync", "--store", "none")
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1 and "--store PATH" in p.stderr.decode()
    [left] = kept_files(cli)
    assert json.loads(left.read_text())["uuid"] == rec["uuid"]
    h = cli("sync", "--help").stdout.decode()
    assert "kept" in h and "Exit status" in h and "1  some runs could not be sent or imported" in h


def test_a_fallback_directory_someone_else_made_is_not_believed(tmp_path):
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {"HOME": str(tmp_path), "CARBONRUN_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    planted = kept.places(env)[-2]  # $TMPDIR/carbonrun-UID/kept
    assert planted.parent == tmp_path / "tmp" / f"carbonrun-{os.geteuid()}"
    planted.mkdir(parents=True)
    (planted / "carbonrun-0badf11e-0000-4000-8000-000000000000.json").write_text("{}")
    os.chown(planted, OTHER_UID, OTHER_UID)
    files, refused = kept.pending(env)
    assert files == [] and [o.path for o in refused] == [planted] and "another user" in refused[0].detail
    assert kept.keep({"uuid": "0badf11e-0000-4000-8000-000000000001"}, "{}", env).parent == tmp_path / "home" / "kept"


def test_a_record_kept_aside_goes_into_postgresql_too(cli, pg_url):
    rec = refused_run(cli, "sh", "-c", "exit 6")
    s = cli("sync", "--store", pg_url)
    assert s.returncode == 0, s.stderr.decode()
    assert kept_files(cli) == []
    stored = cli.record("last", env={"CARBONRUN_STORE": pg_url})
    assert stored["uuid"] == rec["uuid"] and stored["exit_code"] == 6
    assert cli("sync", "--store", pg_url).stdout.startswith(b"nothing to sync")


@pytest.mark.parametrize("body", [b"", b"[]", b'{"schema": "carbonrun.run/1"}'])
def test_read_refuses_what_is_not_a_record(tmp_path, body):
    f = tmp_path / "carbonrun-x.json"
    f.write_bytes(body)
    with pytest.raises(ValueError):
        kept.read(f)
