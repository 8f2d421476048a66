"""The run store in PostgreSQL (psycopg 3): one database for a whole cluster or team.

Same record and methods as the SQLite Store. Rows are keyed by the run's uuid, so every write is an
idempotent upsert, and an older version of a run never overwrites a newer one (`saved_ts`). A writer
never fails because the server is away: the run is spooled to a local directory and `carbonrun sync`
sends it later. Readers (report, history) get a one-line StoreError instead.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from carbonrun.files import write_atomic
from carbonrun.store.sqlite import StoreError, check_prune
from carbonrun.store import redact

SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 3
SPOOL_FORMAT = "carbonrun.spool/1"
_MIGRATION_LOCK = 0x43524E31  # advisory lock: one migrating writer at a time
_INCOMPLETE_NOTE = ("carbonrun stopped before the run ended (killed or power lost): figures up to the last"
                    " checkpoint")

_MIGRATIONS = {
    1: [
        """CREATE TABLE IF NOT EXISTS carbonrun.runs (
            id BIGSERIAL PRIMARY KEY,
            uuid TEXT UNIQUE NOT NULL,
            started_at TEXT NOT NULL,
            started_ts DOUBLE PRECISION NOT NULL,
            saved_ts DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            command JSONB NOT NULL,
            tags JSONB NOT NULL,
            job_id TEXT,
            owner TEXT,
            record JSON NOT NULL)""",  # JSON, not JSONB: keeps the record's key order
        "CREATE INDEX IF NOT EXISTS runs_started ON carbonrun.runs (started_ts)",
        "CREATE INDEX IF NOT EXISTS runs_job ON carbonrun.runs (job_id)",
    ],
}

_UPSERT = """
INSERT INTO carbonrun.runs AS r (uuid, started_at, started_ts, saved_ts, status, command, tags, job_id, owner, record)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (uuid) DO UPDATE SET saved_ts = EXCLUDED.saved_ts, status = EXCLUDED.status, tags = EXCLUDED.tags,
    job_id = EXCLUDED.job_id, record = EXCLUDED.record
WHERE r.saved_ts <= EXCLUDED.saved_ts
"""
_COLS = "SELECT id, record, status, owner FROM carbonrun.runs"


def spool_dir(env: Optional[dict] = None) -> Path:
    """Beside the default SQLite store (CARBONRUN_HOME, else $XDG_DATA_HOME/carbonrun)."""
    from carbonrun.store.sqlite import default_path

    return default_path(env).parent / "spool"


def _owner() -> str:
    """host:pid:start-time of this process, so a reused PID is not taken for a live writer."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def _alive(owner: Optional[str]) -> bool:
    if not owner or owner.count(":") < 2:
        return False
    host, pid, start = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine: trust the row
    return pid.isdigit() and os.path.exists(f"/proc/{pid}") and _start_time(int(pid)) == start


def _finite(x: Any) -> Any:
    """JSONB rejects NaN and infinities (JSON has none): store them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class PgStore:
    """Runs in a PostgreSQL database, schema `carbonrun` (tables runs, schema_version)."""

    keyed_by_uuid = True  # saves need no id: a spooled run gets its id when it reaches the server

    def __init__(self, url: str, spool: Optional[Path] = None) -> None:
        self.url = url
        self.where = redact(url)
        self.spool = Path(spool) if spool else spool_dir()
        self.path = self.spool / "fallback"  # runner writes its last-resort JSON beside it (path.parent)
        self.offline: Optional[str] = None
        self._conn = None
        self._meta: Dict[str, Tuple[str, float]] = {}  # uuid -> (owner, started_ts)

    # -- connecting --------------------------------------------------------------------------------
    def _open(self):
        psycopg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as e:
            raise StoreError(f"invalid PostgreSQL URL {self.where}: {e}") from None
        extra = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S}
        if "application_name" not in params:
            extra["application_name"] = "carbonrun"
        conn = psycopg.connect(self.url, autocommit=True, **extra)
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def connect(self, create: bool = True):
        """The connection. A writer (`create`) never fails for an unreachable server: it goes offline
        and spools; a reader gets a StoreError naming the server."""
        psycopg = _psycopg()
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = self._open()
            self.offline = None
        except psycopg.Error as e:  # refused, timed out, authentication failed, ...
            reason = _reason(e)
            if not create:
                raise StoreError(f"cannot reach the run store {self.where}: {reason}") from None
            self.offline = reason
            return None
        return self._conn

    def _migrate(self, conn) -> None:
        import psycopg

        try:
            version = conn.execute("SELECT max(version) FROM carbonrun.schema_version").fetchone()[0] or 0
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            version = 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.where} was written by a newer carbonrun (store schema {version});"
                             " upgrade carbonrun to use it")
        if version == SCHEMA_VERSION:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'carbonrun'").fetchone():
                conn.execute("CREATE SCHEMA carbonrun")  # needs CREATE on the database: a DBA may do it first
            conn.execute("CREATE TABLE IF NOT EXISTS carbonrun.schema_version (version INTEGER PRIMARY KEY,"
                         " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            version = conn.execute("SELECT coalesce(max(version), 0) FROM carbonrun.schema_version").fetchone()[0]
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[v]:
                    conn.execute(statement)
                conn.execute("INSERT INTO carbonrun.schema_version (version) VALUES (%s)", (v,))

    def _reading(self):
        return self.connect(create=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, record: dict, started_ts: float) -> Optional[int]:
        """Insert a starting run; returns its id, or None when it was spooled (offline)."""
        self._meta[record["uuid"]] = (_owner(), started_ts)
        if self.connect() is None:
            self._spool(record)
            return None
        self.save(record)
        return record.get("id")

    def save(self, record: dict) -> None:
        """Write the record as it stands; spool it when the server is away (retried for the final save)."""
        import psycopg

        if self._conn is None and not (self.offline and record.get("status") == "running"):
            self.connect()  # offline checkpoints wait; the final save tries once more
        if self._conn is None:
            self._spool(record)
            return
        owner, started_ts = self._meta.get(record["uuid"], (_owner(), time.time()))
        saved_ns = time.time_ns()
        try:
            record["id"] = self._upsert(self._conn, record, owner, started_ts, saved_ns / 1e9)
        except psycopg.Error as e:
            self.close()
            self.offline = _reason(e)
            self._spool(record)
            return
        self._unspool(record["uuid"], saved_ns)

    @staticmethod
    def _upsert(conn, record: dict, owner: Optional[str], started_ts: float, saved_ts: float) -> int:
        from psycopg.types.json import Json, Jsonb

        job = record.get("job") or {}
        conn.execute(_UPSERT, (
            record["uuid"], record["started_at"], started_ts, saved_ts, record["status"],
            Jsonb(list(record["command"])), Jsonb(record.get("tags") or {}), job.get("job_id"), owner,
            Json(_finite({**record, "id": None}))))  # the row's id is filled in on reading
        return conn.execute("SELECT id FROM carbonrun.runs WHERE uuid = %s", (record["uuid"],)).fetchone()[0]

    def delete(self, ids: Iterable[int]) -> int:
        """Remove runs by id in one transaction; unknown ids are ignored. Returns how many went."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        conn = self._reading()
        with conn.transaction():
            return conn.execute("DELETE FROM carbonrun.runs WHERE id = ANY(%s)", (wanted,)).rowcount

    def prune_ids(self, keep: Optional[int] = None, older_than_days: Optional[float] = None,
                  now: Optional[float] = None) -> List[int]:
        """Ids beyond the newest `keep` AND older than the age given; a live run is never chosen."""
        check_prune(keep, older_than_days)
        sql, args = "SELECT id, status, owner FROM carbonrun.runs WHERE true", []
        if older_than_days is not None:
            sql += " AND started_ts < %s"
            args.append((time.time() if now is None else now) - older_than_days * 86400)
        if keep is not None:
            sql += " AND id NOT IN (SELECT id FROM carbonrun.runs ORDER BY id DESC LIMIT %s)"
            args.append(keep)
        rows = self._reading().execute(sql + " ORDER BY id", args).fetchall()
        return [r[0] for r in rows if not (r[1] == "running" and _alive(r[2]))]

    def prune(self, keep: Optional[int] = None, older_than_days: Optional[float] = None) -> int:
        return self.delete(self.prune_ids(keep, older_than_days))

    # -- reading -----------------------------------------------------------------------------------
    def _load(self, row) -> dict:
        record = dict(row[1])
        record["id"] = row[0]
        if row[2] == "running" and not _alive(row[3]):
            record["status"] = "incomplete"
            record.setdefault("notes", []).append(_INCOMPLETE_NOTE)
        return record

    def get(self, ref: str) -> dict:
        """A run by `last`, `-N` (N-th most recent), numeric id, or uuid prefix."""
        conn, ref = self._reading(), str(ref).strip()
        if ref in ("last", "-1", ""):
            rows = conn.execute(_COLS + " ORDER BY id DESC LIMIT 1").fetchall()
        elif ref.startswith("-") and ref[1:].isdigit() and int(ref[1:]) > 0:
            rows = conn.execute(_COLS + " ORDER BY id DESC LIMIT 1 OFFSET %s", (int(ref[1:]) - 1,)).fetchall()
        else:
            rows = []
        if ref.isdigit():
            rows = conn.execute(_COLS + " WHERE id = %s", (int(ref),)).fetchall()
        if not rows and len(ref) >= 4 and all(c in "0123456789abcdef-" for c in ref.lower()):
            # a uuid prefix (one of digits only when no run has that id)
            rows = conn.execute(_COLS + " WHERE uuid LIKE %s LIMIT 2", (ref.lower() + "%",)).fetchall()
            if len(rows) > 1:
                raise KeyError(f"run reference {ref!r} is ambiguous (several uuids start with it)")
        if not rows:
            raise KeyError(f"no run {ref!r} in {self.where}" if ref not in ("last", "") else
                           f"no runs stored yet in {self.where}")
        return self._load(rows[0])

    def query(self, *, limit: Optional[int] = None, tags: Optional[dict] = None, command: Optional[str] = None,
              status: Optional[str] = None, since_ts: Optional[float] = None,
              job: Optional[str] = None) -> List[dict]:
        """Runs, newest first, filtered in SQL (only `running` vs `incomplete` needs the owner check)."""
        from psycopg.types.json import Jsonb

        sql, args = _COLS + " WHERE true", []
        if status:
            sql += " AND status = %s"
            args.append("running" if status in ("running", "incomplete") else status)
        if since_ts is not None:
            sql += " AND started_ts >= %s"
            args.append(since_ts)
        if command:  # on the command line as typed (argv joined by spaces), case-insensitive
            sql += (" AND array_to_string(ARRAY(SELECT jsonb_array_elements_text(command)), ' ')"
                    " ILIKE %s ESCAPE '\\'")
            args.append("%" + command.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if tags:
            sql += " AND tags @> %s"
            args.append(Jsonb({str(k): str(v) for k, v in tags.items()}))
        if job is not None:
            sql += " AND job_id = %s"
            args.append(str(job))
        sql += " ORDER BY id DESC"
        out: List[dict] = []
        for row in self._reading().execute(sql, args):
            if status in ("running", "incomplete") and _alive(row[3]) != (status == "running"):
                continue
            out.append(self._load(row))
            if limit and len(out) >= limit:
                break
        return out

    def count(self) -> int:
        return self._reading().execute("SELECT count(*) FROM carbonrun.runs").fetchone()[0]

    def ids(self, prefix: str = "") -> List[str]:
        """Run ids for shell completion (newest first); nothing when the server is away."""
        import psycopg

        try:
            rows = self._reading().execute("SELECT id FROM carbonrun.runs ORDER BY id DESC LIMIT 200").fetchall()
        except (StoreError, psycopg.Error):
            return []
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    # -- the spool ---------------------------------------------------------------------------------
    def _spool(self, record: dict) -> None:
        """Keep this version of the run in a private local file (atomic), replacing the older one."""
        owner, started_ts = self._meta.get(record["uuid"], (_owner(), time.time()))
        saved_ns = time.time_ns()
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = {"format": SPOOL_FORMAT, "target": self.where, "owner": owner, "started_ts": started_ts,
                "saved_ts": saved_ns / 1e9, "record": record}
        write_atomic(self.spool / f"{record['uuid']}.{saved_ns}.json", json.dumps(body), fsync=True)
        self._unspool(record["uuid"], saved_ns)
        note = (f"the run store {self.where} was unreachable ({self.offline}); the run was kept in {self.spool}"
                " until `carbonrun sync` sends it")
        for key in ("base_notes", "notes"):  # base_notes survive the record's next fill
            if note not in record.setdefault(key, []):
                record[key].append(note)

    def _unspool(self, uuid: str, before_ns: int) -> None:
        """Drop this run's spooled versions older than the one just written or stored."""
        for old in self.spool.glob(f"{uuid}.*.json"):
            ns = old.name[len(uuid) + 1:-len(".json")]
            if ns.isdigit() and int(ns) < before_ns:
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass  # `carbonrun sync` sent it already

    def sync(self) -> Tuple[int, List[str], List[str]]:
        """Send every spooled run meant for this database: (sent, errors, other targets).

        Idempotent: a file is removed only after its upsert, and an upsert never duplicates a uuid
        nor overwrites a newer version, so two syncs at once or a crash in between lose nothing."""
        import psycopg

        conn = self._reading()
        sent, errors, others = 0, [], []
        for path in sorted(self.spool.glob("*.json")):
            try:
                body = json.loads(path.read_text())
            except FileNotFoundError:
                continue  # another sync, or the run itself, took it
            except (OSError, ValueError) as e:
                errors.append(f"{path.name}: unreadable ({e})")
                continue
            if body.get("target") != self.where:
                others.append(str(body.get("target")))
                continue
            rec = body["record"]
            try:
                self._upsert(conn, rec, body.get("owner"), body["started_ts"], body["saved_ts"])
            except psycopg.Error as e:
                errors.append(f"run {rec.get('uuid')}: {_reason(e)}")
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            sent += 1
        return sent, errors, others


def _psycopg():
    """psycopg 3, imported only for a PostgreSQL store (an optional dependency)."""
    try:
        import psycopg
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'carbonrun[postgres]'") from None
    return psycopg


def pending(spool: Optional[Path] = None) -> List[Path]:
    """Spooled run files waiting for `carbonrun sync`."""
    return sorted((spool or spool_dir()).glob("*.json"))


def _reason(e: Exception) -> str:
    """The first line of a psycopg error: enough to see refused, timeout, or bad password."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
