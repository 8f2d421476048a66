"""The PostgreSQL store against a real server: same methods as SQLite, concurrent writers, the spool."""
from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from carbonrun import store as stores
from carbonrun.store.postgres import PgStore, SCHEMA_VERSION, pending
from carbonrun.store.sqlite import Store, StoreError

from tests.fakes.postgres import Server, free_port

DEAD_OWNER = f"{socket.gethostname()}:999999999:1"  # this host, a process that cannot exist


def _rec(cmd="python train.py", tags=None, status="running", **extra) -> dict:
    return {"schema": "carbonrun.run/1", "id": None, "uuid": str(uuid.uuid4()), "command": cmd.split(),
            "tags": tags or {}, "started_at": "2024-05-01T10:00:00.000+00:00", "status": status,
            "energy": {"total_kwh": 0.5}, "emissions": {"kg": 0.1}, "notes": [], **extra}


def test_open_store_picks_by_spec(tmp_path):
    assert isinstance(stores.open_store("postgresql://u:secret@db.example/carbon"), PgStore)
    assert isinstance(stores.open_store("postgres://db/carbon"), PgStore)
    assert isinstance(stores.open_store(str(tmp_path / "runs.sqlite")), Store)
    assert stores.redact("postgresql://u:secret@db:5432/c") == "postgresql://u:***@db:5432/c"
    assert "secret" not in PgStore("postgresql://u:secret@127.0.0.1:1/c").where


def test_same_methods_as_the_sqlite_store(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path / "spool")
    assert st.connect() is not None and st.offline is None
    a, b, c = (_rec("python train.py --lr 0.1", {"exp": "base"}), _rec("make test", {"exp": "base", "ci": "1"}),
               _rec("python eval.py", {"exp": "new"}, x=float("nan")))
    t0 = time.time()
    for i, r in enumerate((a, b, c)):
        st.begin(r, t0 + i)
        assert isinstance(r["id"], int)
        r["status"] = "completed" if r is not b else "failed"
        st.save(r)
    assert st.get("last")["uuid"] == c["uuid"] and st.get("-2")["uuid"] == b["uuid"]
    assert st.get(str(a["id"]))["uuid"] == a["uuid"] and st.get(a["uuid"][:8])["id"] == a["id"]
    assert st.get("last")["x"] is None  # NaN cannot be JSON: stored as null, not a failed save
    assert [r["uuid"] for r in st.query(tags={"exp": "base"}, limit=1)] == [b["uuid"]]
    assert [r["uuid"] for r in st.query(tags={"exp": "base"})] == [b["uuid"], a["uuid"]]
    assert [r["uuid"] for r in st.query(command="TRAIN.PY --lr")] == [a["uuid"]]
    assert [r["uuid"] for r in st.query(status="failed")] == [b["uuid"]]
    assert [r["uuid"] for r in st.query(since_ts=t0 + 1)] == [c["uuid"], b["uuid"]]
    assert st.ids() == [str(c["id"]), str(b["id"]), str(a["id"])] and st.count() == 3
    assert list(st.get("last").keys())[:4] == ["schema", "id", "uuid", "command"]  # the record's own order
    with pytest.raises(KeyError):
        st.get("999999")
    assert st.prune_ids(keep=2) == [a["id"]] and st.delete(st.prune_ids(keep=2)) == 1
    assert st.delete([b["id"], 424242]) == 1 and st.ids() == [str(c["id"])]


def test_a_dead_writers_running_run_reads_incomplete(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path / "spool")
    st.connect()
    live, dead = _rec(), _rec()
    st.begin(live, time.time())
    st._meta[dead["uuid"]] = (DEAD_OWNER, time.time())
    st.save(dead)
    assert st.get(live["uuid"])["status"] == "running"
    assert st.get(dead["uuid"])["status"] == "incomplete"
    assert [r["uuid"] for r in st.query(status="incomplete")] == [dead["uuid"]]
    assert st.prune_ids(keep=0) == [dead["id"]]  # a live run is never pruned


def test_migrations_are_versioned_and_a_newer_schema_is_refused(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path)
    conn = st.connect()
    assert conn.execute("SELECT max(version) FROM carbonrun.schema_version").fetchone()[0] == SCHEMA_VERSION
    PgStore(pg_url, spool=tmp_path).connect()  # idempotent
    assert conn.execute("SELECT count(*) FROM carbonrun.schema_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute("INSERT INTO carbonrun.schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer carbonrun"):
        PgStore(pg_url, spool=tmp_path).connect()


def test_a_role_that_may_not_create_schemas_uses_one_made_for_it(pg_url, tmp_path):
    import psycopg

    role = "r_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"REVOKE CREATE ON DATABASE {pg_url.rsplit('/', 1)[1]} FROM PUBLIC")
        admin.execute(f"CREATE SCHEMA carbonrun AUTHORIZATION {role}")
    url = pg_url.replace("//carbonrun@", f"//{role}@")
    st = PgStore(url, spool=tmp_path)
    r = _rec(status="completed")
    st.begin(r, time.time())
    assert st.offline is None and st.get("last")["uuid"] == r["uuid"]


def test_an_older_version_never_overwrites_a_newer_one(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path)
    conn = st.connect()
    r = _rec(status="completed")
    PgStore._upsert(conn, r, None, 1.0, saved_ts=20.0)
    PgStore._upsert(conn, {**r, "status": "running"}, None, 1.0, saved_ts=10.0)  # a late, stale spool file
    assert st.get(r["uuid"])["status"] == "completed" and st.count() == 1


def test_run_ids_stay_dense_over_checkpoints(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path / "spool")
    st.connect()
    ids = []
    for _ in range(3):  # begin, two checkpoints and the final save: one sequence value per run, not four
        r = _rec()
        st.begin(r, time.time())
        st.save(r)
        st.save(r)
        r["status"] = "completed"
        st.save(r)
        ids.append(r["id"])
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]


def test_eight_cli_writers_at_once_all_land(cli, pg_url):
    procs = [subprocess.Popen(cli.argv("--quiet", "--store", pg_url, "--tag", f"n={i}", "sh", "-c", "sleep 0.3"),
                              env=cli.env, cwd=cli.home, stderr=subprocess.PIPE) for i in range(8)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    runs = PgStore(pg_url).query()
    assert sorted(r["tags"]["n"] for r in runs) == [str(i) for i in range(8)]
    assert len({r["uuid"] for r in runs}) == 8 and len({r["id"] for r in runs}) == 8
    assert all(r["status"] == "completed" and r["energy"]["total_kwh"] > 0 for r in runs)
    assert pending(Path(cli.env["CARBONRUN_HOME"]) / "spool") == []


def test_a_reader_gets_one_line_when_the_server_is_away(cli, tmp_path):
    url = f"postgresql://carbonrun@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StoreError, match="cannot reach the run store"):
        PgStore(url, spool=tmp_path).get("last")
    p = cli("report", "--job", "1", "--store", url)
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1 and b"cannot reach" in p.stderr


def test_offline_checkpoints_wait_and_the_final_save_retries(pg_url, tmp_path):
    closed = f"postgresql://carbonrun@127.0.0.1:{free_port()}/postgres"
    st = PgStore(closed, spool=tmp_path)
    r = _rec()
    st.begin(r, time.time())
    assert st.offline and r["id"] is None and len(pending(tmp_path)) == 1
    assert any("carbonrun sync" in n for n in r["notes"])
    other = PgStore(closed, spool=tmp_path)  # the Python API checkpoints through a store of its own
    other.save(dict(r))
    assert len(pending(tmp_path)) == 1  # a newer version replaces the older file, whoever wrote it
    st.url = pg_url  # the server comes back
    st.save(r)  # a checkpoint: no reconnect attempt mid-run
    assert len(pending(tmp_path)) == 1 and st.offline
    r["status"] = "completed"
    st.save(r)  # the final save tries again, and sends
    assert st.offline is None and pending(tmp_path) == [] and isinstance(r["id"], int)
    stored = PgStore(pg_url, spool=tmp_path).get(r["uuid"])
    assert stored["status"] == "completed"
    for notes in (r["notes"], r["base_notes"], stored["notes"]):  # it reached the server: no stale note
        assert not any("carbonrun sync" in n for n in notes), notes


def test_unreachable_database_spools_and_sync_sends_each_run_once(cli, tmp_path):
    port = free_port()
    url = f"postgresql://carbonrun@127.0.0.1:{port}/postgres"  # nothing listens there yet
    spool = Path(cli.env["CARBONRUN_HOME"]) / "spool"
    local = []
    for i in range(3):
        out = tmp_path / f"run{i}.json"
        p = cli("--quiet", "--store", url, "--json", str(out), "--tag", f"i={i}", "sh", "-c", "exit 0")
        assert p.returncode == 0, p.stderr.decode()
        local.append(json.loads(out.read_text()))
    assert all(any("unreachable" in n and "carbonrun sync" in n for n in r["notes"]) for r in local)
    assert len(pending(spool)) == 3
    down = cli("sync", "--store", url)
    assert down.returncode == 1 and len(pending(spool)) == 3  # nothing is dropped while it is away

    srv = Server(port=port)
    try:
        saved = {f.name: f.read_bytes() for f in pending(spool)}
        first, second = (subprocess.Popen(cli.argv("sync", "--store", url), env=cli.env, cwd=cli.home,
                                          stdout=subprocess.PIPE) for _ in range(2))  # two syncs at once
        assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
        assert pending(spool) == []
        name, body = next(iter(saved.items()))
        (spool / name).write_bytes(body)  # a crash between sending a file and removing it
        again = cli("sync", "--store", url)
        assert again.returncode == 0 and b"sent 1 " in again.stdout
        runs = PgStore(url, spool=spool).query()
        assert sorted(r["uuid"] for r in runs) == sorted(r["uuid"] for r in local)  # none lost, none twice
        for r in local:
            stored = next(s for s in runs if s["uuid"] == r["uuid"])
            assert stored["status"] == "completed" and stored["energy"] == r["energy"]
            assert stored["tags"] == r["tags"] and isinstance(stored["id"], int)
            assert not any("carbonrun sync" in n for n in stored["notes"])  # no stale spool note once sent
        assert cli("sync", "--store", url).stdout.startswith(b"nothing to sync")
    finally:
        srv.stop()


def test_sync_leaves_runs_meant_for_another_database(cli, pg_url):
    closed = f"postgresql://carbonrun@127.0.0.1:{free_port()}/elsewhere"
    assert cli("--quiet", "--store", closed, "true").returncode == 0
    p = cli("sync", "--store", pg_url)
    assert p.returncode == 0 and b"sent 0" in p.stdout and b"1 spooled run(s) are for " + closed.encode() in p.stdout
    assert len(pending(Path(cli.env["CARBONRUN_HOME"]) / "spool")) == 1
    assert PgStore(pg_url).count() == 0


def test_a_nan_never_breaks_history(cli, pg_url):
    st = PgStore(pg_url)
    good, bad = _rec(status="completed"), _rec(status="completed", duration_s=1.0)
    bad["emissions"]["kg"] = float("nan")
    bad["energy"]["pue"] = float("inf")
    for r in (good, bad):
        st.begin(r, time.time())
    assert st.get(good["uuid"])["id"] == good["id"]
    p = cli("history", "--store", pg_url)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr
    assert f"run #{bad['id']} cannot be read".encode() in p.stderr
    listed = json.loads(cli("history", "-f", "json", "--store", pg_url).stdout)
    assert [r["uuid"] for r in listed] == [good["uuid"]]
    r = cli("report", str(bad["id"]), "--store", pg_url)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1


def test_a_v1_database_is_migrated_and_lists_from_its_summary(pg_url, tmp_path):
    import psycopg

    from carbonrun.store import postgres

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA carbonrun")
        conn.execute("CREATE TABLE carbonrun.schema_version (version INTEGER PRIMARY KEY,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for statement in postgres._MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("INSERT INTO carbonrun.schema_version (version) VALUES (1)")
        r = _rec(status="completed", duration_s=2.5, timeline={"t": [1.0], "watts": {"cpu": [3.0]}})
        conn.execute("INSERT INTO carbonrun.runs (uuid, started_at, started_ts, saved_ts, status, command, tags,"
                     " record) VALUES (%s, %s, 1, 1, 'completed', '[\"a\"]', '{}', %s)",
                     (r["uuid"], r["started_at"], json.dumps(r)))
    st = PgStore(pg_url, spool=tmp_path)
    assert st.schema_version() == SCHEMA_VERSION == 2
    [row] = st.query(summary=True)
    assert row["duration_s"] == 2.5 and row["energy"] == {"total_kwh": 0.5, "low_kwh": 0.5, "high_kwh": 0.5}
    assert row["emissions"] == {"kg": 0.1, "low_kg": 0.1, "high_kg": 0.1} and row["measured"] == "unmeasured"
    assert st.get("last")["timeline"] == r["timeline"] and "timeline" not in st.query(brief=True)[0]


def test_a_command_that_is_not_utf8_is_stored_not_spooled_forever(pg_url, tmp_path):
    st = PgStore(pg_url, spool=tmp_path)
    r = _rec("echo a\udcffb", {"k\udcfe": "v"}, status="completed")  # argv bytes that were not UTF-8
    st.begin(r, time.time())
    assert st.offline is None and pending(tmp_path) == []
    back = st.get("last")
    assert back["command"] == ["echo", "a\\udcffb"] and back["tags"] == {"k\\udcfe": "v"}
    assert [q["id"] for q in st.query(command="a\udcff")] == [back["id"]]  # a filter kept the same way
