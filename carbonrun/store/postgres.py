"""The run store in PostgreSQL (psycopg 3): one database for a whole cluster or team.

Same interface as the SQLite store (carbonrun.store.base). Rows are keyed by the run's uuid, so every
write is an idempotent upsert, and an older version of a run never overwrites a newer one
(`saved_ts`). A writer never fails because the server is away: the run is spooled to a local
directory and `carbonrun sync` sends it later. Readers (report, history) get a one-line StoreError.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from carbonrun.files import private_dirs, write_atomic
from carbonrun.redact import redact
from carbonrun.store import kept
from carbonrun.store.base import (SUMMARY_COLUMNS, Record, Row, SqlStore, StoreError,  # noqa: F401
                                  check_prune, coarse, storable, summary_row, writable)
from carbonrun.store.owner import owner_token
from carbonrun.paths import data_dir

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

SCHEMA_VERSION = 2
CONNECT_TIMEOUT_S = 3
SPOOL_FORMAT = "carbonrun.spool/1"
_MIGRATION_LOCK = 0x43524E31  # advisory lock: one migrating writer at a time
_SPOOL_NOTE = "the run store {} was unreachable ({}); the run was kept in {} until `carbonrun sync` sends it"


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
    # The summary a listing reads in small columns; the timeline apart from the record.
    2: [
        "ALTER TABLE carbonrun.runs " + ", ".join(
            f"ADD COLUMN IF NOT EXISTS {c} {t}" for c, t in (
                ("duration_s", "DOUBLE PRECISION"), ("total_kwh", "DOUBLE PRECISION"),
                ("low_kwh", "DOUBLE PRECISION"), ("high_kwh", "DOUBLE PRECISION"), ("kg", "DOUBLE PRECISION"),
                ("low_kg", "DOUBLE PRECISION"), ("high_kg", "DOUBLE PRECISION"), ("g_per_kwh", "DOUBLE PRECISION"),
                ("measured", "TEXT"), ("exit_code", "INTEGER"), ("samples", "BIGINT"), ("timeline", "JSON"))),
        "CREATE INDEX IF NOT EXISTS runs_status ON carbonrun.runs (status, id)",
    ],
}
_SET_SUMMARY = "UPDATE carbonrun.runs SET " + ", ".join(f"{c} = %s" for c in SUMMARY_COLUMNS) + " WHERE id = %s"


def _fill_summaries(conn: Any) -> None:
    """After v2: each run's summary columns from its record, read without its timeline, in batches."""
    with conn.cursor(name="carbonrun_summaries") as rows:
        rows.itersize = 500
        rows.execute("SELECT id, (record::jsonb - 'timeline')::text FROM carbonrun.runs")
        batch = []
        for run_id, text in rows:
            try:
                record = json.loads(text)
            except (ValueError, RecursionError):
                continue  # unreadable: listed with a warning naming it
            if isinstance(record, dict):
                batch.append((*summary_row(record).values(), run_id))
            if len(batch) >= 500:
                conn.cursor().executemany(_SET_SUMMARY, batch)
                batch = []
        if batch:
            conn.cursor().executemany(_SET_SUMMARY, batch)


_AFTER = {2: _fill_summaries}

_UPSERT = (
    f"INSERT INTO carbonrun.runs AS r (uuid, started_at, started_ts, saved_ts, status, command, tags, owner,"
    f" {', '.join(SUMMARY_COLUMNS)}, record, timeline)"
    f" VALUES ({', '.join(['%s'] * (8 + len(SUMMARY_COLUMNS)))}, %s::json, %s::json)"
    " ON CONFLICT (uuid) DO UPDATE SET saved_ts = EXCLUDED.saved_ts, status = EXCLUDED.status,"
    " tags = EXCLUDED.tags, "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in SUMMARY_COLUMNS)
    + ", record = EXCLUDED.record, timeline = EXCLUDED.timeline WHERE r.saved_ts <= EXCLUDED.saved_ts")
# An INSERT draws a sequence value even when it conflicts: each later save of a run is an UPDATE, so the
# ids users see stay dense (#1, #2, ...), and the insert above is only for a run's first save (or a race).
_UPDATE = (
    "UPDATE carbonrun.runs SET saved_ts = %s, status = %s, tags = %s, "
    + ", ".join(f"{c} = %s" for c in SUMMARY_COLUMNS)
    + ", record = %s::json, timeline = %s::json WHERE uuid = %s AND saved_ts <= %s RETURNING id")


def spool_dir(env: Optional[Dict[str, str]] = None) -> Path:
    """Beside the default SQLite store (CARBONRUN_HOME, else $XDG_DATA_HOME/carbonrun)."""
    return data_dir(env) / "spool"


def _is_spool_note(note: Any) -> bool:
    return isinstance(note, str) and note.startswith("the run store ") and "until `carbonrun sync`" in note


def _drop_spool_notes(record: Record) -> None:
    """Remove the notes saying the run waits in the spool (it no longer does)."""
    for key in ("notes", "base_notes"):
        if any(_is_spool_note(n) for n in record.get(key) or []):
            record[key] = [n for n in record[key] if not _is_spool_note(n)]


class PgStore(SqlStore):
    """Runs in a PostgreSQL database, schema `carbonrun` (tables runs, schema_version)."""

    kind = "postgresql"
    FROM_RECORDS = "carbonrun.runs"
    FROM_SUMMARY = "carbonrun.runs"
    RECORD_COL, COMMAND_COL, TAGS_COL = "record::text", "command::text", "tags::text"  # not decoded by psycopg

    def __init__(self, url: str, spool: Optional[Path] = None) -> None:
        super().__init__()
        self.url = url
        self.where = redact(url)
        self.spool = Path(spool) if spool else spool_dir()
        self.offline: Optional[str] = None
        self._conn: Any = None
        self._meta: Dict[str, Tuple[str, float]] = {}  # uuid -> (owner, started_ts)

    # -- connecting --------------------------------------------------------------------------------
    def _open(self) -> Any:
        psycopg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict  # psycopg is optional (the postgres extra)

        try:
            params = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as e:
            # the raw URL in the text lets redact find the password, and the copy psycopg quotes in e
            raise StoreError(redact(f"invalid PostgreSQL URL {self.url}: {e}")) from None
        extra: Dict[str, Any] = {} if "connect_timeout" in params else {"connect_timeout": CONNECT_TIMEOUT_S}
        if "application_name" not in params:
            extra["application_name"] = "carbonrun"
        conn = psycopg.connect(self.url, autocommit=True, **extra)
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def connect(self, create: bool = True) -> Any:
        """The connection. A writer (`create`) never fails for an unreachable server: it goes offline
        and spools (None); a reader gets a StoreError naming the server."""
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


    def _migrate(self, conn: Any) -> None:
        import psycopg  # psycopg is optional (the postgres extra)

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
                if v in _AFTER:
                    _AFTER[v](conn)
                conn.execute("INSERT INTO carbonrun.schema_version (version) VALUES (%s)", (v,))

    def schema_version(self) -> int:
        return int(list(self._rows("SELECT coalesce(max(version), 0) FROM carbonrun.schema_version"))[0][0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- reading (the queries are in SqlStore) ------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> List[Row]:
        import psycopg  # psycopg is optional (the postgres extra)

        conn = self.connect(create=False)
        try:
            return list(conn.execute(sql.replace("?", "%s"), tuple(args)).fetchall())
        except psycopg.Error as e:
            raise StoreError(f"the run store {self.where} failed: {_reason(e)}") from None

    def _command_filter(self) -> str:
        return "array_to_string(ARRAY(SELECT jsonb_array_elements_text(command)), ' ') ILIKE ? ESCAPE '\\'"

    def _tags_filter(self, tags: Dict[str, str]) -> Tuple[str, List[Any]]:
        from psycopg.types.json import Jsonb  # psycopg is optional (the postgres extra)

        return "tags @> ?", [Jsonb(tags)]

    def _timeline(self, run_id: int) -> Any:
        rows = self._rows("SELECT timeline::text FROM carbonrun.runs WHERE id = ?", (run_id,))
        return rows[0][0] if rows else None

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, run: "RunRecord", started_ts: float) -> Optional[int]:
        """Insert a starting run; returns its id, or None when it was spooled (offline)."""
        record = writable(run)
        self._meta[record["uuid"]] = (owner_token(), started_ts)
        if self.connect() is None:
            self._spool(record)
            return None
        self.save(run)
        return record.get("id")

    def save(self, run: "RunRecord") -> None:
        """Write the record as it stands; spool it when the server is away (retried for the final save)."""
        import psycopg  # psycopg is optional (the postgres extra)

        record = writable(run)
        if self._conn is None and not (self.offline and record.get("status") == "running"):
            self.connect()  # offline checkpoints wait; the final save tries once more
        if self._conn is None:
            self._spool(record)
            return
        owner, started_ts = self._meta.get(record["uuid"], (owner_token(), time.time()))
        saved_ns = time.time_ns()
        try:
            record["id"] = self._upsert(self._conn, record, owner, started_ts, saved_ns / 1e9, self.keep_timeline)
        except psycopg.Error as e:
            self.close()
            self.offline = _reason(e)
            self._spool(record)
            return
        self._unspool(record["uuid"], saved_ns)

    @staticmethod
    def _upsert(conn: Any, record: Record, owner: Optional[str], started_ts: float, saved_ts: float,
                keep_timeline: bool = False) -> int:
        """Write one version of a run. It reached the database: a note that it waits in the spool is
        no longer true, and goes."""
        from psycopg.types.json import Jsonb  # psycopg is optional (the postgres extra)

        _drop_spool_notes(record)
        clean = storable({**record, "id": None})  # the row's id is filled in on reading
        timeline = clean.get("timeline") if keep_timeline else coarse(clean.get("timeline"))
        body = json.dumps({**clean, "timeline": None} if "timeline" in clean else clean)
        cols = summary_row(clean)
        tags, line = Jsonb(clean.get("tags") or {}), None if timeline is None else json.dumps(timeline)
        found = conn.execute(_UPDATE, (saved_ts, clean["status"], tags, *cols.values(), body, line,
                                       clean["uuid"], saved_ts)).fetchone()
        if found is None:  # a first save, or a newer version is there already (kept as it is)
            found = conn.execute("SELECT id FROM carbonrun.runs WHERE uuid = %s", (clean["uuid"],)).fetchone()
        if found is not None:
            return int(found[0])
        conn.execute(_UPSERT, (
            clean["uuid"], clean["started_at"], started_ts, saved_ts, clean["status"],
            Jsonb(list(clean["command"])), tags, owner, *cols.values(), body, line))
        return int(conn.execute("SELECT id FROM carbonrun.runs WHERE uuid = %s", (record["uuid"],)).fetchone()[0])

    def delete(self, ids: Iterable[int]) -> int:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        conn = self.connect(create=False)
        with conn.transaction():
            return int(conn.execute("DELETE FROM carbonrun.runs WHERE id = ANY(%s)", (wanted,)).rowcount)

    # -- the spool ---------------------------------------------------------------------------------
    def keep_aside(self, run: "RunRecord", text: Optional[str] = None) -> Path:
        """The last resort is the spool itself: `carbonrun sync` sends it when the server is back. A
        spool that cannot be written: a kept-aside file (store/kept.py), which `sync` imports too."""
        record = writable(run)
        try:
            self._spool(record)
        except OSError:
            _drop_spool_notes(record)  # it is not in the spool after all
            return kept.keep(record, text)
        return self.spool

    def _spool(self, record: Record) -> None:
        """Keep this version of the run in a private local file (atomic), replacing the older one."""
        owner, started_ts = self._meta.get(record["uuid"], (owner_token(), time.time()))
        saved_ns = time.time_ns()
        note = _SPOOL_NOTE.format(self.where, redact(self.offline or "?"), self.spool)
        for key in ("base_notes", "notes"):  # base_notes survive the record's next fill
            if note not in record.setdefault(key, []):
                record[key].append(note)
        private_dirs(self.spool)
        body = {"format": SPOOL_FORMAT, "target": self.where, "owner": owner, "started_ts": started_ts,
                "saved_ts": saved_ns / 1e9, "keep_timeline": self.keep_timeline, "record": storable(record)}
        write_atomic(self.spool / f"{record['uuid']}.{saved_ns}.json", json.dumps(body), fsync=True)
        self._unspool(record["uuid"], saved_ns)

    def _unspool(self, uuid: str, before_ns: int) -> None:
        """Drop this run's spooled versions older than the one just written or stored."""
        if not self.spool.is_dir():
            return
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
        import psycopg  # psycopg is optional (the postgres extra)

        conn = self.connect(create=False)
        sent, errors, others = 0, [], []  # type: int, List[str], List[str]
        for path in pending(self.spool):
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
                self._upsert(conn, rec, body.get("owner"), body["started_ts"], body["saved_ts"],
                             bool(body.get("keep_timeline")))
            except psycopg.Error as e:
                errors.append(f"run {rec.get('uuid')}: {_reason(e)}")
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            sent += 1
        return sent, errors, others


def _psycopg() -> Any:
    """psycopg 3, imported only for a PostgreSQL store (an optional dependency)."""
    try:
        import psycopg  # psycopg is optional (the postgres extra)
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'carbonrun[postgres]'") from None
    return psycopg


def pending(spool: Optional[Path] = None) -> List[Path]:
    """Spooled run files waiting for `carbonrun sync`."""
    return sorted((spool or spool_dir()).glob("*.json"))


def _reason(e: Exception) -> str:
    """The first line of a psycopg error: enough to see refused, timeout, or bad password."""
    text = str(e).strip().splitlines()
    return redact(text[0]) if text else type(e).__name__


PostgresStore = PgStore
