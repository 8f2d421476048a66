"""Never touch what is not ours: devices, FIFOs, sockets, links and other users' files given as the
store or as an output are refused untouched and never block; `--no-store` keeps nothing; stores that
others may write are refused; unreadable records are skipped, never stored NaN."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from carbonrun.store.sqlite import Store, StoreError

from tests.test_store import minimal_record, sha

OTHER_UID = 54321  # a user that owns nothing here: root may chown to it


def snapshot(path: Path):
    st = os.lstat(path)
    return st.st_mode, st.st_uid, st.st_gid, st.st_rdev, st.st_size, st.st_mtime_ns


@pytest.fixture
def odd(tmp_path):
    """A character device (c 1 3, as /dev/null), a FIFO, a socket, a directory, links: none of them ours."""
    d = tmp_path / "odd"
    d.mkdir(mode=0o700)
    os.mknod(d / "chr", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(d / "chr", 0o666)  # as /dev/null: a chmod to 0600 would lock every other user out
    os.mkfifo(d / "fifo", 0o644)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    (d / "dir").mkdir()
    (d / "theirs").write_bytes(b"")
    os.chown(d / "theirs", OTHER_UID, OTHER_UID)
    os.symlink(d / "theirs", d / "link-to-theirs")
    os.symlink(d / "nowhere.sqlite", d / "dangling")
    yield d
    sock.close()


KINDS = {"chr": "character device", "fifo": "FIFO", "sock": "socket", "dir": "directory",
         "link-to-theirs": "symbolic link", "dangling": "symbolic link", "theirs": "another user"}


@pytest.mark.parametrize("name", list(KINDS))
def test_a_store_that_is_not_a_file_of_ours_is_refused_and_the_command_still_runs(cli, odd, name):
    path = odd / name
    before = {p.name: snapshot(p) for p in odd.iterdir()}
    p = cli("--quiet", "--store", str(path), "sh", "-c", "exit 5", timeout=20)  # a FIFO must not block
    err = p.stderr.decode()
    assert p.returncode == 5, err  # the command's own exit code
    first = err.splitlines()[0]
    assert first.startswith("carbonrun: warning: ") and KINDS[name] in first and str(path) in first, err
    assert {q.name: snapshot(q) for q in odd.iterdir()} == before  # modes, owners, sizes, times: unchanged
    assert not (odd / "nowhere.sqlite").exists()  # a dangling link never creates its target
    kept = list((Path(cli.env["CARBONRUN_HOME"]) / "kept").glob("carbonrun-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["exit_code"] == 5  # the record is not lost
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    r = cli("history", "--store", str(path), timeout=20)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and KINDS[name] in r.stderr.decode()


@pytest.mark.parametrize("how", [["--no-store"], ["--store", "/dev/null"], ["--store", "none"], "env", "config"])
def test_no_store_measures_and_keeps_nothing(cli, tmp_path, how):
    null_before = snapshot(Path("/dev/null"))
    env = {"CARBONRUN_STORE": "none"} if how == "env" else None
    if how == "config":
        (tmp_path / "config" / "carbonrun").mkdir(parents=True)
        (tmp_path / "config" / "carbonrun" / "config.toml").write_text('store = "none"\n')
    flags = how if isinstance(how, list) else []
    out = tmp_path / "run.json"
    p = cli(*flags, "--quiet", "--json", str(out), "sh", "-c", "exit 3", env=env, timeout=20)
    assert p.returncode == 3, p.stderr.decode()
    assert b"warning" not in p.stderr and b"not stored" in p.stderr
    assert json.loads(out.read_text())["exit_code"] == 3  # exported as usual
    assert not Path(cli.env["CARBONRUN_HOME"]).exists()  # no store, no spool, no fallback file
    assert snapshot(Path("/dev/null")) == null_before
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == 0o666


def test_no_store_is_in_the_help(cli):
    text = cli("run", "--help").stdout.decode()
    assert "--no-store" in text and "/dev/null" in text


def test_outputs_refuse_devices_fifos_and_links_without_blocking(cli, odd):
    assert cli("--quiet", "true").returncode == 0
    before = {p.name: snapshot(p) for p in odd.iterdir()}
    for name in ("chr", "fifo", "link-to-theirs"):
        target = str(odd / name)
        p = cli("--quiet", "--json", target, "true", timeout=20)
        assert p.returncode == 0 and b"cannot write " + target.encode() in p.stderr, p.stderr
        for args in (["history", "-o", target], ["report", "last", "-f", "json", "-o", target]):
            r = cli(*args, timeout=20)
            assert r.returncode == 2 and r.stderr.decode().count("\n") == 1, (args, r.stderr)
    assert {q.name: snapshot(q) for q in odd.iterdir()} == before


def test_json_and_report_files_are_created_private(cli, tmp_path):
    old = os.umask(0)
    try:
        assert cli("--quiet", "--json", str(tmp_path / "r.json"), "true").returncode == 0
        assert cli("report", "last", "-o", str(tmp_path / "r.txt")).returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o600


# -- stores others may write (as ssh treats ~/.ssh) --------------------------------------------------------
def _store_with_a_run(path: Path) -> None:
    st = Store(path)
    st.begin(minimal_record(1), time.time())
    st.close()


@pytest.mark.parametrize("case", ["file-owner", "file-mode", "dir-owner", "dir-mode"])
def test_a_store_others_own_or_may_write_is_refused_with_the_fix(tmp_path, case):
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    path = d / "runs.sqlite"
    _store_with_a_run(path)
    if case == "file-owner":
        os.chown(path, OTHER_UID, OTHER_UID)
    elif case == "file-mode":
        os.chmod(path, 0o660)
    elif case == "dir-owner":
        os.chown(d, OTHER_UID, OTHER_UID)
    else:
        os.chmod(d, 0o777)
    before = sha(path), snapshot(path)
    with pytest.raises(StoreError) as e:
        Store(path).query()
    fix = {"file-owner": "another user", "file-mode": "chmod 600", "dir-owner": "another user",
           "dir-mode": "chmod go-w"}[case]
    assert fix in str(e.value)
    assert (sha(path), snapshot(path)) == before
    assert sorted(os.listdir(d)) == ["runs.sqlite"]


def test_a_sticky_shared_directory_is_fine(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)  # as /tmp
    _store_with_a_run(d / "runs.sqlite")
    assert [r["id"] for r in Store(d / "runs.sqlite").query()] == [1]


def test_a_foreign_sqlite_with_user_version_1_is_refused_before_any_write(cli, tmp_path):
    path = tmp_path / "app.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    before = sha(path)
    for args in (["history", "--store", str(path)], ["--quiet", "--store", str(path), "true"]):
        p = cli(*args)
        assert b"another application" in p.stderr, p.stderr
    assert sha(path) == before
    assert path.read_bytes()[18:20] == b"\x01\x01"  # still a rollback journal: never switched to WAL
    assert not any(n.startswith("app.sqlite-") for n in os.listdir(tmp_path))  # no -wal, -shm, -journal


# -- tolerant reading, no NaN stored ---------------------------------------------------------------------
def test_an_unreadable_record_is_skipped_with_a_warning_naming_it(cli, tmp_path):
    path = Path(cli.env["CARBONRUN_HOME"]) / "runs.sqlite"
    for _ in range(3):
        assert cli("--quiet", "true").returncode == 0
    st = Store(path)
    st.execute("UPDATE records SET record = '{\"bad' WHERE id = 2")  # damaged JSON
    st.execute("UPDATE runs SET command = ? WHERE id = 1", ("[" * 100_000 + "]" * 100_000,))  # nested too deep
    st.execute("UPDATE records SET record = json_set(record, '$.energy.total_kwh', 'x') WHERE id = 3")
    st.close()
    p = cli("history", "-f", "json")
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in json.loads(p.stdout)] == [1]
    err = p.stderr.decode()
    assert "run #2 cannot be read" in err and "run #3 cannot be read" in err and "Traceback" not in err
    p = cli("history")  # the table reads only the summary columns: #2 and #3 are fine there, #1 is not
    assert p.returncode == 0 and p.stderr.decode().count("\n") == 1 and b"run #1 cannot be read" in p.stderr
    assert [line.split()[0] for line in p.stdout.decode().splitlines()[1:] if line[:3].strip().isdigit()] == ["3", "2"]
    assert cli("report", "1").returncode == 0
    r = cli("report", "2")
    assert r.returncode == 2 and b"run #2" in r.stderr and r.stderr.count(b"\n") == 1


def test_nan_is_never_stored(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    rec = minimal_record(1)
    rec["energy"]["machine_kwh"] = float("nan")
    rec["emissions"]["high_kg"] = float("inf")
    st.begin(rec, 1.0)
    assert st.execute("SELECT count(*) FROM records WHERE json_valid(record)")[0][0] == 1
    back = st.get("last")
    assert back["energy"]["machine_kwh"] is None and back["emissions"]["high_kg"] is None
    assert any("not finite" in n for n in back["notes"])
    rec2 = minimal_record(2)
    rec2["emissions"]["kg"] = float("nan")  # a key figure: the run is kept, but lists with a warning
    st.begin(rec2, 2.0)
    assert [r["id"] for r in st.query()] == [1] and "run #2" in st.warnings[0]


def test_a_prometheus_textfile_that_is_a_fifo_is_refused_without_blocking(cli, tmp_path):
    from carbonrun.metrics import TEXTFILE

    d = tmp_path / "textfiles"
    d.mkdir()
    os.mkfifo(d / TEXTFILE, 0o644)
    before = snapshot(d / TEXTFILE)
    out = tmp_path / "run.json"
    p = cli("--quiet", "--prometheus-textfile", str(d), "--json", str(out), "true", timeout=20)
    assert p.returncode == 0, p.stderr.decode()
    assert snapshot(d / TEXTFILE) == before and os.listdir(d) == [TEXTFILE]
    assert any("FIFO" in n for n in json.loads(out.read_text())["notes"])
