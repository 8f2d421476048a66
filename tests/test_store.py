"""The run store: migrations, crash safety, damaged files, privacy, pruning, and the bounded timeline."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonrun.store import sqlite as store_mod
from carbonrun.store.sqlite import SCHEMA_VERSION, Store, StoreError

V1_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, started_at TEXT NOT NULL,
    started_ts REAL NOT NULL, status TEXT NOT NULL, command TEXT NOT NULL, tags TEXT NOT NULL, owner TEXT,
    record TEXT NOT NULL);
CREATE INDEX runs_started ON runs(started_ts);
"""


def minimal_record(n: int, status: str = "completed", command=None, tags=None) -> dict:
    return {"schema": "carbonrun.run/1", "id": None, "uuid": f"00000000-0000-4000-8000-{n:012d}",
            "command": command or ["echo", str(n)], "tags": tags or {}, "started_at": "2024-01-01T00:00:00+00:00",
            "status": status, "exit_code": 0, "duration_s": 1.0, "attribution": "process", "components": [],
            "energy": {"machine_kwh": 1e-6 * n, "job_kwh": 1e-6 * n, "pue": 1.0, "total_kwh": 1e-6 * n},
            "emissions": {"kg": 1e-7 * n, "low_kg": 0.0, "high_kg": 0.0}, "intensity": {"g_per_kwh": 100.0},
            "notes": []}


def fill(store: Store, n: int, start_ts: float = 1_700_000_000.0, step_s: float = 86400.0) -> None:
    """n completed runs, one a day (oldest first) unless told otherwise; one transaction, so it is quick."""
    with store.bulk():
        for i in range(1, n + 1):
            store.begin(minimal_record(i), start_ts + (i - 1) * step_s)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_meta(path: Path):
    db = sqlite3.connect(path)
    try:
        return (db.execute("PRAGMA user_version").fetchone()[0],
                {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")})
    finally:
        db.close()


# -- migrations ------------------------------------------------------------------------------------------
def test_v1_store_is_upgraded_and_its_runs_kept(cli, tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    rec = minimal_record(7, command=["python", "train.py"])
    rec["id"] = 1
    db.execute("INSERT INTO runs VALUES (1, ?, ?, 1.7e9, 'completed', ?, '{}', NULL, ?)",
               (rec["uuid"], rec["started_at"], json.dumps(rec["command"]), json.dumps(rec)))
    db.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    assert sqlite_meta(path) == (1, {"runs_started", "sqlite_autoindex_runs_1"})

    p = cli("report", "last", "--format", "json", "--store", str(path))
    assert p.returncode == 0, p.stderr.decode()
    assert json.loads(p.stdout)["command"] == ["python", "train.py"]
    version, indexes = sqlite_meta(path)
    assert version == SCHEMA_VERSION == 3 and "runs_status" in indexes
    p = cli("--quiet", "--store", str(path), "true")  # and it takes new runs after the old one
    assert p.returncode == 0, p.stderr.decode()
    assert [r["id"] for r in json.loads(cli("history", "-f", "json", "--store", str(path)).stdout)] == [2, 1]


def test_empty_file_becomes_a_current_store(cli, tmp_path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    p = cli("--quiet", "--store", str(path), "true")
    assert p.returncode == 0, p.stderr.decode()
    assert sqlite_meta(path)[0] == SCHEMA_VERSION
    assert cli("report", "last", "-f", "json", "--store", str(path)).returncode == 0


def test_store_from_a_newer_carbonrun_is_refused_untouched(cli, tmp_path):
    path = tmp_path / "future.sqlite"
    st = Store(path)
    st.connect()
    st.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    st.close()
    before = sha(path)
    p = cli("history", "--store", str(path))
    assert p.returncode == 2 and b"newer carbonrun" in p.stderr
    assert sha(path) == before


# -- crash safety -----------------------------------------------------------------------------------------
def test_sigkill_mid_run_leaves_an_incomplete_record_with_energy(cli, tmp_path):
    pidfile = tmp_path / "child.pid"
    p = subprocess.Popen(cli.argv("--quiet", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"), env=cli.env,
                         cwd=cli.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(7)  # past the first 5 s checkpoint
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    assert p.returncode == -signal.SIGKILL
    rec = cli.record()
    assert rec["status"] == "incomplete"
    assert rec["energy"]["machine_kwh"] > 0
    assert rec["duration_s"] >= 4
    assert any("last checkpoint" in n for n in rec["notes"])
    listed = json.loads(cli("history", "--status", "incomplete", "-f", "json").stdout)
    assert [r["id"] for r in listed] == [rec["id"]]


# -- damaged and foreign files ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["report", "history", "run"])
def test_random_bytes_store_is_refused_and_left_untouched(cli, tmp_path, command):
    (tmp_path / "s").mkdir()
    path = tmp_path / "s" / "runs.sqlite"
    path.write_bytes(os.urandom(8192))
    before = sha(path)
    marker = tmp_path / "ran"
    args = {"report": ["report", "last"], "history": ["history"],
            "run": ["run", "--quiet", "--", "touch", str(marker)]}[command]
    p = cli(*args, env={"CARBONRUN_STORE": str(path)})
    err = p.stderr.decode()
    if command == "run":  # a refused store is a warning: the command runs, its record is kept aside
        assert p.returncode == 0, err
        assert err.startswith("carbonrun: warning: ") and "not a carbonrun store" in err.splitlines()[0]
        assert marker.exists()
        assert list((Path(cli.env["CARBONRUN_HOME"]) / "kept").glob("carbonrun-*.json"))
    else:
        assert p.returncode == 2, err
        assert err.count("\n") == 1 and err.startswith("carbonrun: error: ") and "not a carbonrun store" in err
    assert sha(path) == before
    assert os.listdir(path.parent) == ["runs.sqlite"]  # no -wal, -shm or fallback file beside it


def test_damaged_sqlite_store_is_refused_and_left_untouched(cli, tmp_path):
    good = tmp_path / "good.sqlite"
    st = Store(good)
    fill(st, 30)
    st.close()
    data = good.read_bytes()
    path = tmp_path / "damaged.sqlite"
    path.write_bytes(data[:4096] + os.urandom(len(data) - 4096))  # header and schema intact, tables not
    before = sha(path)
    for args in (["report", "last"], ["history"]):
        p = cli(*args, "--store", str(path))
        err = p.stderr.decode()
        assert p.returncode == 2 and err.count("\n") == 1 and "malformed" in err, (args, err)
    p = cli("--quiet", "--store", str(path), "sh", "-c", "exit 3")
    assert p.returncode == 3 and b"warning: " in p.stderr and b"malformed" in p.stderr
    assert sha(path) == before


def test_sqlite_file_of_another_application_is_refused(cli, tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = sha(path)
    p = cli("history", "--store", str(path))
    assert p.returncode == 2 and b"another application" in p.stderr
    p = cli("--quiet", "--store", str(path), "true")
    assert p.returncode == 0 and b"warning: " in p.stderr and b"another application" in p.stderr
    assert sha(path) == before


# -- privacy ---------------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_directory_and_files_are_private_whatever_the_umask(cli, tmp_path):
    old = os.umask(0)
    try:
        home = tmp_path / "a" / "b"
        p = cli("--quiet", "true", env={"CARBONRUN_HOME": str(home)})
        assert p.returncode == 0, p.stderr.decode()
        assert mode(tmp_path / "a") == 0o700 and mode(home) == 0o700
        assert mode(home / "runs.sqlite") == 0o600
        st = Store(home / "runs.sqlite")  # while a connection is open, SQLite keeps -wal and -shm
        st.begin(minimal_record(1), time.time())
        for suffix in ("-wal", "-shm"):
            assert mode(home / f"runs.sqlite{suffix}") == 0o600, suffix
        st.close()
    finally:
        os.umask(old)


def test_existing_directory_is_never_chmodded(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    Store(shared / "runs.sqlite").connect()
    assert mode(shared) == 0o755
    assert mode(shared / "runs.sqlite") == 0o600


def test_a_readable_store_of_ours_is_made_private(tmp_path):
    path = tmp_path / "runs.sqlite"
    Store(path).connect()
    os.chmod(path, 0o644)
    Store(path).connect()
    assert mode(path) == 0o600


# -- delete and prune ------------------------------------------------------------------------------------
def test_delete_is_robust(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    fill(st, 600, step_s=1)
    assert st.delete([]) == 0
    assert st.delete([999_999, 5, 5, "6"]) == 2  # unknown ignored, duplicates once, numeric strings accepted
    assert st.delete(range(1, 601)) == 598  # more ids than one statement binds
    assert st.count() == 0


def test_prune_keep_and_age_each_protect_runs(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    now = 1_700_000_000.0 + 9 * 86400  # run i (1..10) started 10 - i days before now
    fill(st, 10)
    assert st.prune_ids(keep=3, now=now) == list(range(1, 8))
    assert st.prune_ids(older_than_days=5.5, now=now) == [1, 2, 3, 4]
    assert st.prune_ids(keep=8, older_than_days=5.5, now=now) == [1, 2]  # both must allow it
    assert st.delete(st.prune_ids(keep=3)) == 7 and st.count() == 3
    assert st.delete(st.prune_ids(keep=3)) == 0
    with pytest.raises(ValueError):
        st.prune_ids()


def test_prune_never_removes_a_run_being_measured(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    fill(st, 3)
    st.begin(minimal_record(4, status="running"), 1_600_000_000.0)  # oldest, owned by this live process
    assert 4 not in st.prune_ids(keep=0)
    assert st.delete(st.prune_ids(keep=0)) == 3 and st.get("last")["status"] == "running"


# -- queries ---------------------------------------------------------------------------------------------
def test_query_filters_are_literal(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    st.begin(minimal_record(1, command=["python", "a_b.py"], tags={'we"ird': "x=1"}), 1.0)
    st.begin(minimal_record(2, command=["python", "axb.py"], tags={"exp": "1"}), 2.0)
    st.begin(minimal_record(3, command=["grep", "100%", "é"]), 3.0)
    assert [r["id"] for r in st.query(command="a_b")] == [1]  # `_` is not a wildcard
    assert [r["id"] for r in st.query(command="100%")] == [3]
    assert [r["id"] for r in st.query(command="% é")] == [3]  # the command line as typed, not its JSON
    assert [r["id"] for r in st.query(command="PYTHON")] == [2, 1]
    assert [r["id"] for r in st.query(tags={'we"ird': "x=1"})] == [1]
    assert [r["id"] for r in st.query(since_ts=2.0)] == [3, 2]


def test_running_and_incomplete_are_told_apart_by_the_owner(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    st.begin(minimal_record(1, status="running"), 1.0)  # owner: this process, alive
    st.begin(minimal_record(2, status="running"), 2.0)
    st.execute("UPDATE runs SET owner = ? WHERE id = 2", (f"{socket.gethostname()}:999999999:1",))
    assert [r["id"] for r in st.query(status="running")] == [1]
    assert [(r["id"], r["status"]) for r in st.query(status="incomplete")] == [(2, "incomplete")]


def test_summaries_are_the_listing_rows_query_gives(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    st.begin(minimal_record(1, status="running", tags={"exp": "a"}), 1.0)  # owner: this process, alive
    for n in (2, 3, 4):
        st.begin(minimal_record(n, status="running", command=["make", "test"]), float(n))
    st.execute("UPDATE runs SET owner = ? WHERE id = 2", (f"{socket.gethostname()}:999999999:1",))
    st.execute("UPDATE runs SET status = 'completed', total_kwh = NULL WHERE id = 3")  # unreadable: skipped
    rows, brief = st.summaries(), st.query(summary=True)
    assert [s.id for s in rows] == [r["id"] for r in brief] == [4, 2, 1] and len(st.warnings) == 2
    for s, r in zip(rows, brief):
        assert (s.status, s.command, s.tags, s.total_kwh, s.low_kwh, s.high_kwh, s.kg, s.measured) == (
            r["status"], r["command"], r["tags"], *r["energy"].values(), r["emissions"]["kg"], r["measured"])
    assert rows[1].status == "incomplete" and brief[1]["notes"] and "notes" not in brief[0]
    assert [s.id for s in st.summaries(status="incomplete")] == [2] and [s.id for s in st.summaries(limit=1)] == [4]


def test_query_on_a_missing_store_creates_nothing(tmp_path):
    with pytest.raises(StoreError):
        Store(tmp_path / "none" / "runs.sqlite").query()
    assert not (tmp_path / "none").exists()


# -- the bounded timeline -----------------------------------------------------------------------------------
def test_timeline_of_a_week_at_10_hz_stays_bounded_and_keeps_the_energy():
    from carbonrun.accounting.energy import Timeline

    tl = Timeline(["cpu", "gpu"])
    dt, steps = 0.1, 7 * 86400 * 10
    cycle = [{"cpu": (40 + k * 0.05) * dt, "gpu": (200 - k * 0.1) * dt} for k in range(600)]
    total = sum(sum(j.values()) for j in cycle) * (steps // 600)
    for i in range(1, steps + 1):
        tl.add(i * dt, dt, cycle[i % 600])
    rec = tl.to_record()
    assert len(rec["t"]) <= 2000 and all(len(w) == len(rec["t"]) for w in rec["watts"].values())
    assert rec["t"][-1] == pytest.approx(7 * 86400)
    widths = [b - a for a, b in zip([0.0, *rec["t"][:-1]], rec["t"])]
    rebuilt = sum((c + g) * w for c, g, w in zip(rec["watts"]["cpu"], rec["watts"]["gpu"], widths))
    assert abs(rebuilt - total) / total < 1e-6
    assert abs(sum(tl.j["cpu"]) + sum(tl.j["gpu"]) - total) / total < 1e-9


def test_brief_query_leaves_out_only_the_timeline(tmp_path):
    st = Store(tmp_path / "runs.sqlite")
    rec = minimal_record(1)
    rec["timeline"] = {"t": [0.1, 0.2], "watts": {"cpu": [5.0, 6.0]}}
    st.begin(rec, 1.0)
    full, brief = st.query()[0], st.query(brief=True)[0]
    assert full["timeline"] == rec["timeline"] and "timeline" not in brief
    assert {k: v for k, v in full.items() if k != "timeline"} == brief


def test_a_full_disk_is_named_not_hidden_by_the_rollback(tmp_path):
    """SQLite rolls back by itself on SQLITE_FULL; the store must not then fail its own ROLLBACK."""
    from carbonrun.record import new_record

    store = Store(tmp_path / "runs.sqlite")
    rec = new_record(["true"], {}, {}, "process", 0.1, 0.0)
    store.begin(rec, 0.0)
    db = sqlite3.connect(tmp_path / "runs.sqlite")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    store._connection().execute(f"PRAGMA max_page_count = {pages}")  # a full disk, for this connection
    rec["notes"] = ["x" * 100_000]
    with pytest.raises(StoreError, match="failed: database or disk is full"):
        store.save(rec)


def test_a_uuid_prefix_of_digits_only_still_finds_its_run(tmp_path):
    from carbonrun.record import new_record
    from carbonrun.store.sqlite import Store

    store = Store(tmp_path / "runs.sqlite")
    rec = new_record(["true"], {}, {}, "process", 0.1, 0.0)
    rec["uuid"] = "12345678-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
    rec["status"] = "completed"
    store.begin(rec, 0.0)
    assert store.get("1")["uuid"] == rec["uuid"]  # an id first
    assert store.get("12345678")["uuid"] == rec["uuid"]  # no run 12345678: the uuid prefix


def test_v2_store_moves_timelines_out_and_lists_from_summary_columns(cli, tmp_path):
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA + "CREATE INDEX runs_status ON runs(status, id);")
    rec = minimal_record(3)
    rec.update(id=1, exit_code=0, samples=10, attribution="process",
               components=[{"component": "cpu", "counted": True, "estimated": True, "job_j": 3.6, "machine_j": 7.2,
                            "low_j": 1.8, "high_j": 7.2}],
               timeline={"t": [0.5, 1.0], "watts": {"cpu": [3.0, 4.0]}})
    rec["energy"]["total_kwh"] = 1e-6
    db.execute("INSERT INTO runs VALUES (1, ?, ?, 1.7e9, 'completed', ?, '{}', NULL, ?)",
               (rec["uuid"], rec["started_at"], json.dumps(rec["command"]), json.dumps(rec)))
    db.execute("INSERT INTO runs VALUES (2, 'u2', 'x', 1.8e9, 'completed', '[\"a\"]', '{}', NULL, '{\"bad')")
    db.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    st = Store(path)
    assert st.schema_version() == 3
    [row] = st.query(summary=True)  # run 2 cannot be read: skipped, with a warning naming it
    assert "run #2" in st.warnings[0]
    assert row["energy"] == {"total_kwh": 1e-6, "low_kwh": 0.5e-6, "high_kwh": 2e-6}
    assert row["measured"] == "estimated" and row["samples"] == 10 and "components" not in row
    assert st.get("1")["timeline"] == rec["timeline"] and st.get("1")["components"] == rec["components"]
    assert st.execute("SELECT count(*) FROM records WHERE record LIKE '%watts%'")[0][0] == 0  # kept apart
    assert st.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs'")[0][0] == 2
    p = cli("history", "--store", str(path))
    assert p.returncode == 0 and "~" in p.stdout.decode().splitlines()[1] and b"run #2" in p.stderr


def test_a_locked_store_never_delays_the_start_and_the_final_save_inserts_the_run(tmp_path):
    path = tmp_path / "runs.sqlite"
    Store(path).connect()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another writer holds the store
    st, rec = Store(path), minimal_record(1, status="running")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="busy: another process holds its lock"):
        st.begin(rec, 5.0)
    with pytest.raises(StoreError, match="busy"):
        st.save(rec)  # a checkpoint retries the insert, briefly
    assert time.monotonic() - t0 < 2.0 and rec["id"] is None
    lock.execute("ROLLBACK")
    lock.close()
    rec["status"] = "completed"
    st.save(rec)  # the final save inserts the run the start could not
    assert rec["id"] == 1 and st.get("1")["status"] == "completed"
    assert st.prune_ids(older_than_days=0, now=6.0) == [1]  # started when the run started, not now


# -- what a run's timeline costs the store ------------------------------------------------------------------
def _energy(tl: dict) -> float:
    widths = [b - a for a, b in zip([0.0, *tl["t"][:-1]], tl["t"])]
    return sum(w * d for series in tl["watts"].values() for w, d in zip(series, widths))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.001, 1e4), st.floats(0, 2e3), st.floats(0, 500)), min_size=1, max_size=900))
def test_a_coarse_timeline_keeps_the_energy_in_at_most_120_steps(steps):
    from carbonrun.store.base import coarse

    t, now = [], 0.0
    for width, _cpu, _gpu in steps:
        now += width
        t.append(now)
    tl = {"t": t, "watts": {"cpu": [s[1] for s in steps], "gpu": [s[2] for s in steps]}}
    c = coarse(tl)
    assert len(c["t"]) <= 120 and c["t"][-1] == t[-1] and c["t"] == sorted(c["t"])
    assert set(c["watts"]) == {"cpu", "gpu"} and all(len(v) == len(c["t"]) for v in c["watts"].values())
    assert _energy(c) == pytest.approx(_energy(tl), rel=1e-3, abs=1e-2)  # watts are rounded to 1 mW
    if len(t) <= 120:
        assert c == tl


def test_the_store_keeps_a_coarse_timeline_unless_asked(tmp_path):
    from carbonrun.measure.engine import open_store
    from carbonrun.settings import resolve

    long = {"t": [0.2 * (i + 1) for i in range(2000)], "watts": {"cpu": [float(i % 50) for i in range(2000)]}}
    for keep, env in ((False, {}), (True, {"CARBONRUN_KEEP_TIMELINE": "1"})):
        os.environ.update(env)
        try:
            store = open_store(resolve({"store": (str(tmp_path / f"{keep}.sqlite"), "flag")}))
        finally:
            for k in env:
                del os.environ[k]
        assert store.keep_timeline is keep
        rec = minimal_record(1)
        rec["timeline"] = long
        store.begin(rec, 1.0)
        stored = store.get("last")["timeline"]
        if keep:
            assert stored == long
        else:
            assert len(stored["t"]) == 118 and _energy(stored) == pytest.approx(_energy(long))
        assert rec["timeline"] is long  # the caller's record (the summary, --json) keeps every point
    flagged = resolve({"keep_timeline": (True, "flag")})
    assert open_store(flagged).keep_timeline is True
