"""Records a run store could not take, kept aside in private files until `carbonrun sync` imports them.

When a store fails (a full or read-only disk, a lock held too long, a refused path), the engine keeps
the final record in `<data dir>/kept/carbonrun-<uuid>.json` (0600, written atomically and synced), or,
only when that directory cannot be written, in the next of `paths.kept_dirs`. `import_kept` puts each
into a store once: a run the store already has is not duplicated (a checkpoint it holds is completed
by the final record), and a file goes only once the store gives its record back. A file that is not a
readable record of ours stays where it is, and its outcome names it.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, List, Mapping, Optional, Tuple, cast

from carbonrun import paths
from carbonrun.files import RefusedPath, kind, private_dirs, read_head, write_atomic
from carbonrun.record import from_json
from carbonrun.store.base import NoStore, Record, StoreError, UnreadableRecord, check_record
from carbonrun.timefmt import iso

if TYPE_CHECKING:
    from carbonrun.record import RunRecord
    from carbonrun.store.base import Store

PREFIX = "carbonrun-"
MAX_BYTES = 256 << 20  # far above a day's full timeline: a bigger file is not one of ours
SYNC_HINT = "until `carbonrun sync` imports it into the store"  # ends the note saying where it went
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LIVE = ("running", "incomplete")  # a stored checkpoint, not a finished run

# Outcomes of one file
IMPORTED = "imported"  # the store did not have the run
COMPLETED = "completed"  # the store had a checkpoint of the run: the kept final record replaced it
STORED = "already stored"  # the store had it: the file was removed, nothing written
DAMAGED = "damaged"  # not a readable record of ours: left in place
FAILED = "not imported"  # the store did not take it: left in place


@dataclass(frozen=True)
class Outcome:
    """What happened to one kept file (or to a directory of them that cannot be believed)."""

    path: Path
    result: str
    detail: str  # the run (uuid, command) or why not

    @property
    def ok(self) -> bool:
        return self.result in (IMPORTED, COMPLETED, STORED)


def _check_dir(d: Path) -> None:
    """A directory whose records we may write and believe: ours, not a link, writable by no one else
    (the fallback under /tmp could have been made by someone else)."""
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedPath(d, f"{kind(st.st_mode)}, not a directory")
    if st.st_uid != os.geteuid():
        raise RefusedPath(d, f"a directory of another user (uid {st.st_uid})")
    if st.st_mode & 0o022:
        raise RefusedPath(d, f"a directory others may write (mode {stat.S_IMODE(st.st_mode):04o})")


def keep(record: Record, text: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Path:
    """Keep the record (as `text`, JSON) in a private file of its own; returns where. The first
    place's OSError when no place can take it."""
    text = json.dumps(record, indent=2) if text is None else text
    error: Optional[OSError] = None
    for d in paths.kept_dirs(env):
        try:
            private_dirs(d)
            _check_dir(d)
            path = d / f"{PREFIX}{record['uuid']}.json"
            write_atomic(path, text, fsync=True)
            return path
        except OSError as e:
            error = error or e
    raise error or OSError("nowhere to keep the record")


def places(env: Optional[Mapping[str, str]] = None) -> List[Path]:
    """Every directory a kept record may be in: kept_dirs, and the data directory itself (where
    earlier versions kept them)."""
    return [*paths.kept_dirs(env), paths.data_dir(env)]


def pending(env: Optional[Mapping[str, str]] = None) -> Tuple[List[Path], List[Outcome]]:
    """The kept files waiting for `carbonrun sync`, oldest first, and an outcome for each directory
    that holds some but cannot be believed (another user's, writable by others)."""
    found: List[Tuple[float, str, Path]] = []
    refused: List[Outcome] = []
    for d in places(env):
        try:
            files = [p for p in d.glob(f"{PREFIX}*.json") if not p.is_symlink()]
        except OSError:
            continue
        if not files:
            continue
        try:
            _check_dir(d)
        except OSError as e:
            refused.append(Outcome(d, DAMAGED, f"{e}: its {len(files)} file(s) were not read"))
            continue
        for p in files:
            try:
                found.append((p.lstat().st_mtime, p.name, p))
            except FileNotFoundError:
                pass  # another sync took it
    return [p for _, _, p in sorted(found)], refused


def read(path: Path) -> Record:
    """A kept record, checked as the store's tolerant reader checks one; UnreadableRecord saying why
    (OSError for a file that cannot be read: not a regular file of ours)."""
    st = os.lstat(path)
    if st.st_uid != os.geteuid():
        raise RefusedPath(path, f"a file of another user (uid {st.st_uid})")
    data = read_head(path, MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UnreadableRecord(f"larger than {MAX_BYTES >> 20} MiB")
    try:
        record = from_json(data)
    except (ValueError, RecursionError) as e:  # RecursionError: JSON nested beyond reason
        raise UnreadableRecord(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    check_record(record)
    if not isinstance(record.get("uuid"), str) or not _UUID.fullmatch(record["uuid"]):
        raise UnreadableRecord(f"its uuid {record.get('uuid')!r} is not a run's")
    return dict(record)


def _started_ts(record: Record, path: Path) -> float:
    try:
        return datetime.fromisoformat(str(record["started_at"]).replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return path.lstat().st_mtime


def _stored(store: "Store", uuid: str) -> Optional[Record]:
    try:
        return store.get(uuid)
    except KeyError:
        return None


def _describe(record: Record) -> str:
    command = " ".join(str(a) for a in record.get("command") or [])
    return f"run {record['uuid'][:8]} ({record['status']}): {command[:60]}{'...' if len(command) > 60 else ''}"


def _put(store: "Store", record: Record, stored: Optional[Record], path: Path) -> bool:
    """Insert the record, or replace the checkpoint `stored`; True once the store gives it back (a
    PostgreSQL store that lost its server meanwhile spools instead: not an import)."""
    notes = record.get("notes")
    note = f"kept aside in {path} when the run store failed; imported by `carbonrun sync` at {iso(time.time())}"
    record["notes"] = [*(notes if isinstance(notes, list) else []), note]
    if stored is None:
        record["id"] = None
        store.begin(cast("RunRecord", record), _started_ts(record, path))
    else:
        record["id"] = stored["id"]
        store.save(cast("RunRecord", record))
    back = _stored(store, record["uuid"])
    return back is not None and (back.get("status") == record["status"]
                                 or record["status"] in _LIVE and back.get("status") in _LIVE)


def _import_one(store: "Store", path: Path) -> Outcome:
    try:
        record = read(path)
    except FileNotFoundError:
        return Outcome(path, STORED, "taken meanwhile by another sync")
    except UnreadableRecord as e:
        return Outcome(path, DAMAGED, f"not a run record ({e})")
    except OSError as e:
        return Outcome(path, DAMAGED, f"cannot be read ({e.strerror or e})")
    uuid, what = record["uuid"], _describe(record)
    live = record["status"] in _LIVE
    try:
        stored = _stored(store, uuid)
        if stored is not None and (live or stored.get("status") not in _LIVE):
            result = STORED
        else:
            result = IMPORTED if stored is None else COMPLETED
            if not _put(store, record, stored, path):
                return Outcome(path, FAILED, f"{what}: the store did not keep it")
    except StoreError as e:
        try:  # two syncs at once: the other one may have stored it meanwhile
            again = _stored(store, uuid)
        except StoreError:
            again = None
        if again is None or again.get("status") in _LIVE and not live:
            return Outcome(path, FAILED, f"{what}: {e}")
        result = STORED
    try:
        path.unlink()
    except FileNotFoundError:
        pass  # another sync removed it
    except OSError as e:
        return Outcome(path, FAILED, f"{what}: stored, but the file could not be removed ({e.strerror});"
                                     " the next sync finds it stored")
    return Outcome(path, result, what)


def open_for_import(store: "Store") -> None:
    """Connect the store for importing: created when it does not exist yet; StoreError when it cannot
    be used (a PostgreSQL server away: spooling would not be an import), or keeps nothing."""
    if store.kind == "none":
        raise StoreError("the store is `none` (runs are not kept): pass --store PATH or a postgresql:// URL")
    try:
        store.connect(create=False)
    except NoStore:
        store.connect(create=True)


def import_kept(store: "Store", env: Optional[Mapping[str, str]] = None) -> List[Outcome]:
    """Import every kept record into `store` (see the module's docstring); one outcome per file, and
    one per directory that cannot be believed. StoreError when the store cannot be used at all."""
    files, outcomes = pending(env)
    if files:
        open_for_import(store)
    return outcomes + [_import_one(store, p) for p in files]


def outcomes_summary(outcomes: List[Outcome]) -> Tuple[int, int, int]:
    """(imported or completed, already stored, not imported or damaged)."""
    done = sum(o.result in (IMPORTED, COMPLETED) for o in outcomes)
    stored = sum(o.result == STORED for o in outcomes)
    return done, stored, len(outcomes) - done - stored
