"""The run store: one SQLite file, many concurrent writers (WAL), private to the user.

A run is inserted when it starts (status running) and checkpointed while it runs, so a carbonrun
killed with SIGKILL leaves its energy up to the last checkpoint. A `running` record whose owner
process is gone is reported as `incomplete`. A file that is not a carbonrun store is never written.

The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS[v]` takes a store from v-1 to v
inside one write transaction, so concurrent openers upgrade it once. The record JSON is kept whole
in the last column (so scans of the small columns before it never read its overflow pages).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

APPLICATION_ID = 0x43524E31  # "CRN1" in the SQLite header: marks the file as ours
SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
_STATUSES = ("running", "completed", "failed", "interrupted", "incomplete")

_MIGRATIONS = {
    1: """
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT UNIQUE NOT NULL,
        started_at TEXT NOT NULL,
        started_ts REAL NOT NULL,
        status TEXT NOT NULL,
        command TEXT NOT NULL,
        tags TEXT NOT NULL,
        owner TEXT,
        record TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ts);
    """,
    2: """
    CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
    """,
}


class StoreError(Exception):
    """A store that cannot be used; the message names the file and the fix."""


class NoStore(StoreError):
    """The store file does not exist yet (nothing was ever run): not a broken store."""


def default_path(env: Optional[dict] = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CARBONRUN_HOME"):
        return Path(env["CARBONRUN_HOME"]) / "runs.sqlite"
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "carbonrun" / "runs.sqlite"


def check_prune(keep: Optional[int], older_than_days: Optional[float]) -> None:
    """What `prune` accepts, the same for every store."""
    if keep is None and older_than_days is None:
        raise ValueError("give keep, older_than_days, or both")
    if keep is not None and keep < 0 or older_than_days is not None and older_than_days < 0:
        raise ValueError("keep and older_than_days must not be negative")


def _owner_token(pid: int) -> Optional[str]:
    """host:pid:start-time, so a reused PID is not taken for a live owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        start = data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        start = "?"
    return f"{os.uname().nodename}:{pid}:{start}"


def _owner_alive(owner: Optional[str]) -> bool:
    if not owner:
        return False
    try:
        host, pid, _start = owner.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return False
    if host != os.uname().nodename:
        return True  # cannot tell from here; trust the record
    return _owner_token(pid_n) == owner


@contextmanager
def _private_umask() -> Iterator[None]:
    """Files SQLite creates meanwhile (-journal, -wal, -shm) are readable by the owner only."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


class Store:
    def __init__(self, path: os.PathLike) -> None:
        self.path = Path(path)
        self._db: Optional[sqlite3.Connection] = None

    # -- opening -----------------------------------------------------------------------------------
    def _check_file(self) -> bool:
        """True when the file exists and is ours; raise for a foreign or corrupted file."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise StoreError(f"{self.path} is a directory, not a run store: pass --store PATH to a file") from None
        except OSError as e:
            raise StoreError(f"cannot read the run store {self.path}: {e.strerror}") from None
        if not head:
            return False
        if len(head) < 72 or not head.startswith(_SQLITE_MAGIC):
            raise StoreError(f"{self.path} is not a carbonrun store (not an SQLite file); it was left untouched:"
                             " move it aside or pass --store PATH")
        app_id = int.from_bytes(head[68:72], "big")
        if app_id not in (0, APPLICATION_ID):
            raise StoreError(f"{self.path} is an SQLite file of another application; it was left untouched:"
                             " pass --store PATH to use another file")
        return True

    def _create_file(self) -> None:
        """Create the file 0600, and any missing directories 0700 (never chmod one that existed)."""
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
                os.chmod(d, 0o700)
            except FileExistsError:
                pass
            except OSError as e:
                raise StoreError(f"cannot create the run store's directory {d}: {e.strerror}") from None
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(f"cannot create the run store {self.path}: {e.strerror}") from None

    def _tighten(self) -> None:
        """A store of ours that others can read is made private (its -wal/-shm copy its mode)."""
        try:
            st = os.stat(self.path)
            if st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(self.path, 0o600)
        except OSError:
            pass

    def connect(self, create: bool = True) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if not self._check_file():
            if not create:
                raise NoStore(f"no runs stored yet ({self.path} does not exist)")
            self._create_file()
        self._tighten()
        db = None
        try:
            with _private_umask():
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA busy_timeout = 30000")
                self._migrate(db)
                db.execute("SELECT max(id) FROM runs").fetchone()  # walks the table's edge: damage shows now
        except sqlite3.DatabaseError as e:
            if db is not None:
                db.close()
            raise StoreError(f"{self.path} cannot be used as a run store ({e}); it was left untouched:"
                             " move it aside or pass --store PATH") from None
        except StoreError:
            if db is not None:
                db.close()
            raise
        self._db = db
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN")  # one snapshot: another carbonrun may be creating this store right now
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            db.execute("COMMIT")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer carbonrun (store schema {version});"
                             " upgrade carbonrun to read it")
        if app_id == 0 and version == 0:
            if tables:
                raise StoreError(f"{self.path} is an SQLite file of another application; it was left untouched:"
                                 " pass --store PATH to use another file")
        if version == SCHEMA_VERSION:
            return
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another writer may have done it
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[v].split(";")):
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The open store; an SQLite failure mid-query (a damaged file) becomes a one-line StoreError."""
        db = self.connect(create=False)
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is damaged ({e}): move it aside or pass --store PATH") from None

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, record: dict, started_ts: float) -> int:
        """Insert a starting run; returns its id (also written into the record)."""
        db = self.connect()
        owner = _owner_token(os.getpid())
        outer = db.in_transaction  # a caller's transaction (bulk inserts) is joined, not nested
        if not outer:
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")  # insert and fill in one transaction: one sync, not two
        try:
            cur = db.execute(
                "INSERT INTO runs (uuid, started_at, started_ts, status, command, tags, owner, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record["uuid"], record["started_at"], started_ts, record["status"], json.dumps(record["command"]),
                 json.dumps(record["tags"]), owner, "{}"))
            record["id"] = cur.lastrowid
            self.save(record)
            if not outer:
                db.execute("COMMIT")
        except BaseException:
            record["id"] = None  # not stored: never report an id that is not there
            if not outer:
                db.execute("ROLLBACK")
            raise
        return record["id"]

    def save(self, record: dict) -> None:
        """Write the record as it stands. A checkpoint of a running record is not synced to disk
        (WAL keeps the file consistent; a power cut loses at most the last checkpoints); a
        finished record is."""
        db = self.connect()
        if not db.in_transaction:
            db.execute(f"PRAGMA synchronous = {'NORMAL' if record['status'] == 'running' else 'FULL'}")
        db.execute("UPDATE runs SET status = ?, tags = ?, record = ? WHERE id = ?",
                   (record["status"], json.dumps(record["tags"]), json.dumps(record), record["id"]))

    def delete(self, ids: Iterable[int]) -> int:
        """Remove runs by id in one transaction; unknown ids are ignored. Returns how many went."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        removed = 0
        with self._reading() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(wanted), 500):  # stay under SQLite's bound-variable limit
                    chunk = wanted[i:i + 500]
                    removed += db.execute(f"DELETE FROM runs WHERE id IN ({','.join('?' * len(chunk))})",
                                          chunk).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    def prune_ids(self, keep: Optional[int] = None, older_than_days: Optional[float] = None,
                  now: Optional[float] = None) -> List[int]:
        """Ids `prune` would remove: beyond the newest `keep` AND older than the age given.

        Each option protects runs; a run still being measured (live owner) is never chosen.
        """
        check_prune(keep, older_than_days)
        sql, args = "SELECT id, status, owner FROM runs WHERE 1=1", []
        if older_than_days is not None:
            sql += " AND started_ts < ?"
            args.append((time.time() if now is None else now) - older_than_days * 86400)
        if keep is not None:
            sql += " AND id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT ?)"
            args.append(keep)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [r[0] for r in rows if not (r[1] == "running" and _owner_alive(r[2]))]

    def prune(self, keep: Optional[int] = None, older_than_days: Optional[float] = None) -> int:
        """Remove old runs (see prune_ids); returns how many were removed."""
        return self.delete(self.prune_ids(keep, older_than_days))

    # -- reading -----------------------------------------------------------------------------------
    def _load(self, row) -> dict:
        record = json.loads(row[1])
        if row[2] == "running" and not _owner_alive(row[3]):
            record["status"] = "incomplete"
            record.setdefault("notes", []).append(
                "carbonrun stopped before the run ended (killed or power lost): figures up to the last checkpoint")
        return record

    def get(self, ref: str) -> dict:
        """A run by `last`, `-N` (N-th most recent), numeric id, or uuid prefix."""
        cols = "SELECT id, record, status, owner FROM runs"
        ref = str(ref).strip()
        with self._reading() as db:
            if ref in ("last", "-1", ""):
                row = db.execute(cols + " ORDER BY id DESC LIMIT 1").fetchone()
            elif ref.startswith("-") and ref[1:].isdigit() and int(ref[1:]) > 0:
                row = db.execute(cols + " ORDER BY id DESC LIMIT 1 OFFSET ?", (int(ref[1:]) - 1,)).fetchone()
            else:
                row = None
            if ref.isdigit():
                row = db.execute(cols + " WHERE id = ?", (int(ref),)).fetchone()
            if row is None and len(ref) >= 4 and all(c in "0123456789abcdef-" for c in ref.lower()):
                rows = db.execute(cols + " WHERE uuid LIKE ? LIMIT 2", (ref.lower() + "%",)).fetchall()
                if len(rows) > 1:
                    raise KeyError(f"run reference {ref!r} is ambiguous (several uuids start with it)")
                row = rows[0] if rows else None
            if row is None:
                raise KeyError(f"no run {ref!r} in {self.path}" if ref not in ("last", "") else
                               f"no runs stored yet in {self.path}")
            return self._load(row)

    def query(self, *, limit: Optional[int] = None, tags: Optional[dict] = None, command: Optional[str] = None,
              status: Optional[str] = None, since_ts: Optional[float] = None, brief: bool = False) -> List[dict]:
        """Runs, newest first, filtered in SQL (only `running` vs `incomplete` needs the owner check).

        `brief` leaves out each record's timeline, in SQLite: listing thousands of runs stays quick.
        """
        record = "json_remove(record, '$.timeline')" if brief else "record"
        sql, args = f"SELECT id, {record}, status, owner FROM runs WHERE 1=1", []
        if status:
            sql += " AND status = ?"
            args.append("running" if status in ("running", "incomplete") else status)
        if since_ts is not None:
            sql += " AND started_ts >= ?"
            args.append(since_ts)
        if command:  # on the command line as typed (argv joined by spaces), case-insensitive
            sql += (" AND (SELECT group_concat(value, ' ') FROM json_each(command)) LIKE ? ESCAPE '\\'")
            args.append("%" + command.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        for k, v in (tags or {}).items():
            sql += " AND EXISTS (SELECT 1 FROM json_each(tags) WHERE key = ? AND value = ?)"
            args += [k, v]
        sql += " ORDER BY id DESC"
        out: List[dict] = []
        with self._reading() as db:
            for row in db.execute(sql, args):
                if status in ("running", "incomplete") and _owner_alive(row[3]) != (status == "running"):
                    continue
                out.append(self._load(row))
                if limit and len(out) >= limit:
                    break
        return out

    def count(self) -> int:
        with self._reading() as db:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0]

    def ids(self, prefix: str = "") -> List[str]:
        """Run ids for shell completion (newest first)."""
        try:
            with self._reading() as db:
                rows = db.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 200").fetchall()
        except (StoreError, sqlite3.Error):
            return []
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]
