"""The run store in one SQLite file: many concurrent writers (WAL), private to the user.

A run is inserted when it starts (status running) and checkpointed while it runs, so a carbonrun
killed with SIGKILL leaves its energy up to the last checkpoint. A `running` record whose owner
process is gone is reported as `incomplete`.

Only a file that is ours is ever written: the path must be a regular file (never followed through a
link) owned by the user in a directory no one else may write, and an existing file must carry our
application id (or be an empty SQLite file) before anything, even the switch to WAL, touches it.

The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS[v]` takes a store from v-1 to v
inside one write transaction, so concurrent openers upgrade it once. `runs` holds the small columns
a listing reads (about 200 bytes a run); the record and its timeline live in `records`, so `history`
over 100,000 runs never reads a timeline.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from carbonrun.files import create_private, kind, private_dirs, read_head, RefusedPath
from carbonrun.store.base import (SUMMARY_COLUMNS, NoStore, Record, Row, SqlStore, StoreError,  # noqa: F401
                                  check_prune, storable, summary_row, writable)
from carbonrun.store.owner import owner_token
from carbonrun.paths import data_dir

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

APPLICATION_ID = 0x43524E31  # "CRN1" in the SQLite header: marks the file as ours
SCHEMA_VERSION = 3
_SQLITE_MAGIC = b"SQLite format 3\x00"
RUNNING_WAIT_MS = 200  # the start and the checkpoints never wait long for another writer's lock
FINAL_WAIT_MS = 30_000  # the final record waits: it must not be lost

# A run's identity columns, the same since schema 1.
_RUN = """id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE NOT NULL, started_at TEXT NOT NULL,
        started_ts REAL NOT NULL, status TEXT NOT NULL, command TEXT NOT NULL, tags TEXT NOT NULL, owner TEXT"""
# What a listing shows, written beside the run when it is saved (store/base.py SUMMARY_COLUMNS).
_SUMMARY = """duration_s REAL, total_kwh REAL, low_kwh REAL, high_kwh REAL, kg REAL, low_kg REAL, high_kg REAL,
        g_per_kwh REAL, measured TEXT, exit_code INTEGER, samples INTEGER, job_id TEXT"""

_MIGRATIONS = {
    1: f"""
    CREATE TABLE IF NOT EXISTS runs ({_RUN}, record TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ts);
    """,
    2: """
    CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
    """,
    # The summary beside the run, the record and its timeline apart: a listing reads small rows only.
    3: f"""
    CREATE TABLE runs_v3 ({_RUN}, {_SUMMARY});
    CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL, timeline TEXT);
    INSERT INTO runs_v3 (id, uuid, started_at, started_ts, status, command, tags, owner)
        SELECT id, uuid, started_at, started_ts, status, command, tags, owner FROM runs;
    INSERT INTO records SELECT id,
        CASE WHEN json_valid(record) AND json_type(record, '$.timeline') IS NOT NULL
             THEN json_set(record, '$.timeline', NULL) ELSE record END,
        CASE WHEN json_valid(record) THEN json_extract(record, '$.timeline') END
        FROM runs;
    INSERT INTO sqlite_sequence (name, seq) SELECT 'runs_v3', 0
        WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs_v3');
    UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'runs'), 0))
        WHERE name = 'runs_v3';
    DROP TABLE runs;
    ALTER TABLE runs_v3 RENAME TO runs;
    CREATE INDEX runs_started ON runs(started_ts);
    CREATE INDEX runs_status ON runs(status, id);
    CREATE INDEX runs_job ON runs(job_id) WHERE job_id IS NOT NULL;
    """,
}
_SET_SUMMARY = ("UPDATE runs SET " + ", ".join(f"{c} = ?" for c in SUMMARY_COLUMNS) + " WHERE id = ?")


def _fill_summaries(db: sqlite3.Connection) -> None:
    """After the v3 split: each run's summary columns from its record (read without its timeline)."""
    updates = []
    for run_id, text in db.execute("SELECT id, record FROM records"):
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            continue  # unreadable: listed with a warning, as before
        if isinstance(record, dict):
            updates.append((*summary_row(record).values(), run_id))
    db.executemany(_SET_SUMMARY, updates)


_AFTER = {3: _fill_summaries}


def default_path(env: Optional[Dict[str, str]] = None) -> Path:
    return data_dir(env) / "runs.sqlite"


def check_directory(d: Path) -> None:
    """A store's directory must be the user's (or root's) and writable by no one else, as ssh wants
    of ~/.ssh: whoever may write there may swap the store or its -wal file. A sticky directory
    (/tmp) is fine: others cannot replace what is ours."""
    try:
        st = os.stat(d)
    except OSError as e:
        raise StoreError(f"cannot use the run store's directory {d}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{d} is not a directory: pass --store PATH")
    if st.st_uid not in (os.geteuid(), 0):
        raise StoreError(f"the run store's directory {d} belongs to another user (uid {st.st_uid}): refused;"
                         " pass --store PATH in a directory of yours")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise StoreError(f"the run store's directory {d} is writable by other users"
                         f" (mode {stat.S_IMODE(st.st_mode):04o}): refused; fix it with chmod go-w {d}")


class SqliteStore(SqlStore):
    kind = "sqlite"
    FROM_RECORDS = "runs JOIN records USING (id)"
    FROM_SUMMARY = "runs"

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        super().__init__()
        self.path = Path(path)
        self.where = str(self.path)
        self._db: Optional[sqlite3.Connection] = None
        self._busy_ms = FINAL_WAIT_MS
        self._started: Dict[str, float] = {}  # uuid -> started_ts, to insert later a run the start could not

    # -- opening -----------------------------------------------------------------------------------
    def _check_file(self) -> bool:
        """True when the file exists and may be ours; StoreError for anything else (never opened for
        writing, never followed through a link, never waited on)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreError(f"cannot use the run store {self.path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{self.path} is a directory, not a run store: pass --store PATH to a file")
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{self.path} is {kind(st.st_mode)}, not a run store; it was left untouched:"
                             " pass --store PATH to a file, or --no-store to keep nothing")
        if st.st_uid != os.geteuid():
            raise StoreError(f"the run store {self.path} belongs to another user (uid {st.st_uid}); it was left"
                             " untouched: pass --store PATH to a file of yours")
        if st.st_mode & 0o022:
            raise StoreError(f"the run store {self.path} is writable by other users"
                             f" (mode {stat.S_IMODE(st.st_mode):04o}): refused; fix it with chmod 600 {self.path}")
        try:
            head = read_head(self.path, 100)
        except RefusedPath as e:
            raise StoreError(str(e)) from None
        except OSError as e:
            raise StoreError(f"cannot read the run store {self.path}: {e.strerror}") from None
        if not head:
            return True  # an empty file of the user's: it becomes a store
        if len(head) < 72 or not head.startswith(_SQLITE_MAGIC):
            raise StoreError(f"{self.path} is not a carbonrun store (not an SQLite file); it was left untouched:"
                             " move it aside or pass --store PATH")
        app_id = int.from_bytes(head[68:72], "big")
        if app_id not in (0, APPLICATION_ID):
            raise StoreError(f"{self.path} is an SQLite file of another application; it was left untouched:"
                             " pass --store PATH to use another file")
        if app_id == APPLICATION_ID:
            self._tighten()  # ours: private before SQLite creates -wal and -shm, which copy its mode
        return True

    def _create_file(self) -> None:
        """Create the file 0600, and any missing directories 0700 (never chmod one that existed)."""
        try:
            private_dirs(self.path.parent)
        except OSError as e:
            raise StoreError(f"cannot create the run store's directory {self.path.parent}: {e.strerror}") from None
        try:
            create_private(self.path)
        except OSError as e:
            raise StoreError(f"cannot create the run store {self.path}: {e.strerror}") from None

    def _tighten(self) -> None:
        """A store of ours that others can read is made private (its -wal/-shm copy its mode)."""
        try:
            st = os.lstat(self.path)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(self.path, 0o600, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass

    def _connection(self, create: bool = True) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if self.refused:
            raise StoreError(self.refused)  # once refused for this run, not retried at every checkpoint
        if os.path.isdir(self.path.parent):
            check_directory(self.path.parent)
        if not self._check_file():
            if not create:
                raise NoStore(f"no runs stored yet ({self.path} does not exist)")
            self._create_file()
            self._check_file()  # what was created is what we open (no link slipped in meanwhile)
        db = None
        try:
            # -journal, -wal and -shm get the file's own mode (0600), whatever the umask: the process's
            # umask is never changed (a tracked block's threads may be creating files meanwhile)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 30000")
            self._migrate(db)
            db.execute("SELECT max(id) FROM runs").fetchone()  # walks the table's edge: damage shows now
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            if isinstance(e, sqlite3.OperationalError) and any(w in str(e) for w in ("full", "readonly", "I/O")):
                raise StoreError(f"the run store {self.path} cannot be written now ({e})") from None  # not its fault
            raise StoreError(f"{self.path} cannot be used as a run store ({e}); it was left untouched:"
                             " move it aside or pass --store PATH") from None
        except StoreError:
            if db is not None:
                db.close()
            raise
        self._tighten()  # only now that it is known to be ours
        self._db = db
        return db

    def connect(self, create: bool = True) -> None:
        self._connection(create)

    def _is_ours(self, db: sqlite3.Connection, version: int, app_id: int) -> bool:
        """Read-only: our application id, or an empty file, or an old store of ours (a `runs` table with
        our columns). Nothing is written to a file before this says yes."""
        if app_id == APPLICATION_ID:
            return True
        tables = {r[0]: r[1] or "" for r in db.execute("SELECT name, sql FROM sqlite_master")}
        if not tables:
            return version == 0
        sql = tables.get("runs", "")
        return all(col in sql for col in ("uuid", "started_ts", "owner", "record"))

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN")  # one snapshot: another carbonrun may be creating this store right now
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            ours = self._is_ours(db, version, app_id)
        finally:
            db.execute("COMMIT")
        if not ours:
            raise StoreError(f"{self.path} is an SQLite file of another application; it was left untouched:"
                             " pass --store PATH to use another file")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer carbonrun (store schema {version});"
                             " upgrade carbonrun to read it")
        if version == SCHEMA_VERSION:
            return
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another writer may have done it
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[v].split(";\n")):
                    db.execute(statement)
                if v in _AFTER:
                    _AFTER[v](db)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def schema_version(self) -> int:
        with self._reading() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The open store; an SQLite failure mid-query (a damaged file) becomes a one-line StoreError."""
        db = self._connection(create=False)
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is damaged ({e}): move it aside or pass --store PATH") from None

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Row]:
        with self._reading() as db:
            yield from db.execute(sql, tuple(args))

    def _command_filter(self) -> str:
        return "(SELECT group_concat(value, ' ') FROM json_each(command)) LIKE ? ESCAPE '\\'"

    def _tags_filter(self, tags: Dict[str, str]) -> Tuple[str, List[Any]]:
        sql, args = [], []  # type: List[str], List[Any]
        for k, v in tags.items():
            sql.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE key = ? AND value = ?)")
            args += [k, v]
        return " AND ".join(sql), args

    def _timeline(self, run_id: int) -> Any:
        with self._reading() as db:
            row = db.execute("SELECT timeline FROM records WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    # -- writing -----------------------------------------------------------------------------------
    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Many begin/save calls in one transaction, one sync (imports, benchmarks, tests)."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise

    def execute(self, sql: str, args: Sequence[Any] = ()) -> List[Row]:
        """One statement on the store (maintenance and tests); its rows."""
        with self._reading() as db:
            return list(db.execute(sql, tuple(args)))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """An SQLite failure while writing becomes a StoreError naming the store (a lock: busy)."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            busy = "locked" in str(e) or "busy" in str(e)
            raise StoreError(f"the run store {self.path} is busy: another process holds its lock" if busy else
                             f"the run store {self.path} failed: {e}") from None

    def begin(self, run: "RunRecord", started_ts: float) -> int:
        """Insert a starting run; returns its id (also written into the record)."""
        with self._writing():
            return self._begin(run, started_ts)

    def save(self, run: "RunRecord") -> None:
        """Write the record as it stands. A checkpoint of a running record is not synced to disk
        (WAL keeps the file consistent; a power cut loses at most the last checkpoints); a
        finished record is. A run whose start could not be stored (a lock) is inserted now."""
        with self._writing():
            self._save(run)

    def _begin(self, run: "RunRecord", started_ts: float) -> int:
        record = writable(run)
        self._started[record["uuid"]] = started_ts
        db = self._connection()
        outer = db.in_transaction  # a caller's transaction (bulk inserts) is joined, not nested
        if not outer:
            self._wait(db, record)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")  # insert and fill in one transaction: one sync, not two
        try:
            cur = db.execute(
                "INSERT INTO runs (uuid, started_at, started_ts, status, command, tags, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record["uuid"], record["started_at"], started_ts, record["status"], json.dumps(record["command"]),
                 json.dumps(record["tags"]), owner_token()))
            record["id"] = cur.lastrowid
            self._save(run)
            if not outer:
                db.execute("COMMIT")
        except BaseException:
            record["id"] = None  # not stored: never report an id that is not there
            if not outer:
                _rollback(db)
            raise
        return int(record["id"])

    def _save(self, run: "RunRecord") -> None:
        record = writable(run)
        if record.get("id") is None:
            if record.get("uuid") not in self._started:
                raise StoreError("the run was never inserted")
            self._begin(run, self._started[record["uuid"]])
            return
        db = self._connection()
        keep = self._timeline_to_store
        try:
            body, timeline = _dumps(record, keep)
        except ValueError:  # NaN or infinity somewhere: stored as null, with a note saying where
            record = storable(record)
            body, timeline = _dumps(record, keep)
        cols = summary_row(record)
        outer = db.in_transaction
        if not outer:
            db.execute(f"PRAGMA synchronous = {'NORMAL' if record['status'] == 'running' else 'FULL'}")
            self._wait(db, record)
            db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_SAVE, (record["status"], json.dumps(record["tags"]), *cols.values(), record["id"]))
            db.execute("INSERT OR REPLACE INTO records (id, record, timeline) VALUES (?, ?, ?)",
                       (record["id"], body, timeline))
            if not outer:
                db.execute("COMMIT")
        except BaseException:
            if not outer:
                _rollback(db)
            raise

    def _wait(self, db: sqlite3.Connection, record: Record) -> None:
        """How long this write may wait for another writer's lock: briefly while the run is measured."""
        ms = RUNNING_WAIT_MS if record.get("status") == "running" else FINAL_WAIT_MS
        if ms != self._busy_ms:
            db.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    def delete(self, ids: Iterable[int]) -> int:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        removed = 0
        with self._reading() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(wanted), 500):  # stay under SQLite's bound-variable limit
                    chunk = wanted[i:i + 500]
                    marks = ",".join("?" * len(chunk))
                    removed += db.execute(f"DELETE FROM runs WHERE id IN ({marks})", chunk).rowcount
                    db.execute(f"DELETE FROM records WHERE id IN ({marks})", chunk)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return removed


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back what is still open. After SQLITE_FULL or an I/O error SQLite has already rolled back, and
    a ROLLBACK then would replace the real error ("disk is full") with "no transaction is active"."""
    if db.in_transaction:
        db.execute("ROLLBACK")


_SAVE = "UPDATE runs SET status = ?, tags = ?, " + ", ".join(f"{c} = ?" for c in SUMMARY_COLUMNS) + " WHERE id = ?"


def _dumps(record: Record, keep: Callable[[Any], Any]) -> Tuple[str, Optional[str]]:
    """(the record with its timeline left as null, the timeline as `keep` keeps it): ValueError on NaN
    or infinity."""
    timeline = keep(record.get("timeline"))
    body = json.dumps({**record, "timeline": None} if "timeline" in record else record, allow_nan=False)
    return body, None if timeline is None else json.dumps(timeline, allow_nan=False)


Store = SqliteStore  # the name before the Store interface existed

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "NoStore", "SqliteStore", "Store", "StoreError", "check_prune",
           "default_path"]
