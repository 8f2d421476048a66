"""The run store: one SQLite file, many concurrent writers (WAL), private to the user.

A run is inserted when it starts (status running) and checkpointed while it runs, so a carbonrun
killed with SIGKILL leaves its energy up to the last checkpoint. A `running` record whose owner
process is gone is reported as `incomplete`. A file that is not a carbonrun store is never written.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Iterable, List, Optional

APPLICATION_ID = 0x43524E31  # "CRN1" in the SQLite header: marks the file as ours
SCHEMA_VERSION = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"

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
}


class StoreError(Exception):
    """A store that cannot be used; the message names the file and the fix."""


def default_path(env: Optional[dict] = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CARBONRUN_HOME"):
        return Path(env["CARBONRUN_HOME"]) / "runs.sqlite"
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "carbonrun" / "runs.sqlite"


def _owner_token(pid: int) -> Optional[str]:
    """host:pid:start-time, so a reused PID is not taken for a live owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        start = data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        start = "?"
    return f"{socket.gethostname()}:{pid}:{start}"


def _owner_alive(owner: Optional[str]) -> bool:
    if not owner:
        return False
    host, pid, _start = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # cannot tell from here; trust the record
    return _owner_token(int(pid)) == owner


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
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.chmod(self.path.parent, 0o700)
        except OSError:
            pass
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass

    def connect(self, create: bool = True) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if not self._check_file():
            if not create:
                raise StoreError(f"no runs stored yet ({self.path} does not exist)")
            self._create_file()
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 30000")
            self._migrate(db)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} cannot be used as a run store ({e}); it was left untouched:"
                             " move it aside or pass --store PATH") from None
        self._db = db
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer carbonrun (store schema {version});"
                             " upgrade carbonrun to read it")
        if app_id == 0 and version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
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

    # -- writing -----------------------------------------------------------------------------------
    def begin(self, record: dict, started_ts: float) -> int:
        """Insert a starting run; returns its id (also written into the record)."""
        db = self.connect()
        owner = _owner_token(os.getpid())
        cur = db.execute(
            "INSERT INTO runs (uuid, started_at, started_ts, status, command, tags, owner, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record["uuid"], record["started_at"], started_ts, record["status"], json.dumps(record["command"]),
             json.dumps(record["tags"]), owner, "{}"))
        record["id"] = cur.lastrowid
        self.save(record)
        return record["id"]

    def save(self, record: dict) -> None:
        """Write the record as it stands (checkpoint or final)."""
        self.connect().execute("UPDATE runs SET status = ?, tags = ?, record = ? WHERE id = ?",
                               (record["status"], json.dumps(record["tags"]), json.dumps(record), record["id"]))

    def delete(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        cur = self.connect(create=False).execute(
            f"DELETE FROM runs WHERE id IN ({','.join('?' * len(ids))})", ids)
        return cur.rowcount

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
        db = self.connect(create=False)
        cols = "SELECT id, record, status, owner FROM runs"
        ref = str(ref).strip()
        if ref in ("last", "-1", ""):
            row = db.execute(cols + " ORDER BY id DESC LIMIT 1").fetchone()
        elif ref.startswith("-") and ref[1:].isdigit():
            row = db.execute(cols + " ORDER BY id DESC LIMIT 1 OFFSET ?", (int(ref[1:]) - 1,)).fetchone()
        elif ref.isdigit():
            row = db.execute(cols + " WHERE id = ?", (int(ref),)).fetchone()
        else:
            rows = db.execute(cols + " WHERE uuid LIKE ? LIMIT 2", (ref + "%",)).fetchall()
            if len(rows) > 1:
                raise KeyError(f"run reference {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise KeyError(f"no run {ref!r} in {self.path}" if ref not in ("last", "") else
                           f"no runs stored yet in {self.path}")
        return self._load(row)

    def query(self, *, limit: Optional[int] = None, tags: Optional[dict] = None, command: Optional[str] = None,
              status: Optional[str] = None, since_ts: Optional[float] = None) -> List[dict]:
        """Runs, newest first, filtered in SQL where the column allows."""
        sql, args = "SELECT id, record, status, owner FROM runs WHERE 1=1", []
        if since_ts is not None:
            sql += " AND started_ts >= ?"
            args.append(since_ts)
        if command:
            sql += " AND command LIKE ?"
            args.append(f"%{command}%")
        for k, v in (tags or {}).items():
            sql += " AND json_extract(tags, ?) = ?"
            args += [f'$."{k}"', v]
        sql += " ORDER BY id DESC"
        out = []
        for row in self.connect(create=False).execute(sql, args):
            rec = self._load(row)
            if status and rec["status"] != status:
                continue
            out.append(rec)
            if limit and len(out) >= limit:
                break
        return out

    def ids(self, prefix: str = "") -> List[str]:
        """Run ids for shell completion (newest first)."""
        try:
            rows = self.connect(create=False).execute("SELECT id FROM runs ORDER BY id DESC LIMIT 200").fetchall()
        except (StoreError, sqlite3.Error):
            return []
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]
