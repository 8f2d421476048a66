"""The run store's interface, and what every SQL store shares (run references, queries, pruning).

`Store` is what the engine, the gate, the sweep and the CLI see: begin/save while a run is measured,
get/query/count/delete/prune afterwards. `SqlStore` writes each query once; SQLite and PostgreSQL
differ only in their connection, their placeholders and a few filters. Reading is tolerant: a record
that cannot be read (bad JSON, a non-finite figure) is skipped with a warning in `warnings` naming its
id, so one bad row never hides the others. Writing never stores NaN, keeps beside each run the small
summary a listing reads, and keeps its timeline apart, coarse (120 steps) unless `keep_timeline`.
"""
from __future__ import annotations

import gc
import json
import math
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple,
                    TypeVar, cast)

from carbonrun.store.owner import owner_alive
from carbonrun import units

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

Record = Dict[str, Any]  # a record as read back (older ones may lack fields a RunRecord has)
T = TypeVar("T")

INCOMPLETE_NOTE = ("carbonrun stopped before the run ended (killed or power lost): figures up to the last"
                   " checkpoint")
NOT_FINITE_NOTE = "some figures were not finite numbers (NaN or infinite) and were stored as null: {}"


class StoreError(Exception):
    """A store that cannot be used; the message names the store and the fix."""


class NoStore(StoreError):
    """The store does not exist yet (nothing was ever run): not a broken store."""


class UnreadableRecord(ValueError):
    """One stored record that cannot be read back."""


class UnreadableRun(StoreError):
    """`get` found the run, but its record cannot be read (the message names its id)."""


class Summary(NamedTuple):
    """A run as a listing shows it, from the small columns stored beside it: no record is decoded.

    The energy range and the measured label are those computed when the run was stored (summary_row);
    `status` is "incomplete" for a run left "running" by a carbonrun that is gone. A tuple, not a
    record, because a listing makes one per run: 100,000 of them must take well under a second."""
    id: int
    uuid: str
    started_at: str
    status: str
    command: List[Any]
    tags: Dict[str, Any]
    duration_s: Optional[float]
    total_kwh: float
    low_kwh: Optional[float]
    high_kwh: Optional[float]
    kg: float
    low_kg: float
    high_kg: float
    g_per_kwh: Optional[float]
    measured: Optional[str]
    exit_code: Optional[int]
    samples: Optional[int]


def check_prune(keep: Optional[int], older_than_days: Optional[float]) -> None:
    """What `prune` accepts, the same for every store."""
    if keep is None and older_than_days is None:
        raise ValueError("give keep, older_than_days, or both")
    if keep is not None and keep < 0 or older_than_days is not None and older_than_days < 0:
        raise ValueError("keep and older_than_days must not be negative")


def parse_ref(ref: str) -> Tuple[str, Any]:
    """A run reference as (kind, value): ('offset', n) for last/-N, ('id', n), ('uuid', prefix), ('bad', ref)."""
    ref = str(ref).strip()
    if ref in ("last", ""):
        return "offset", 0
    if ref.startswith("-") and ref[1:].isdigit() and int(ref[1:]) > 0:
        return "offset", int(ref[1:]) - 1
    if ref.isdigit():
        return "id", int(ref)
    if len(ref) >= 4 and all(c in "0123456789abcdef-" for c in ref.lower()):
        return "uuid", ref.lower()
    return "bad", ref


def text(s: str) -> str:
    """`s` as valid Unicode: an argument that was not UTF-8 (a lone surrogate from the file system
    encoding) is kept visibly as `\\udcff`, since databases refuse lone surrogates."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def finite(x: Any, path: str = "", bad: Optional[List[str]] = None) -> Any:
    """`x` with NaN and infinities as None (JSON has neither; their paths are added to `bad`) and
    every string valid Unicode (`text`)."""
    if isinstance(x, float) and not math.isfinite(x):
        if bad is not None:
            bad.append(path or "value")
        return None
    if isinstance(x, str):
        return text(x)
    if isinstance(x, dict):
        return {text(str(k)): finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v, f"{path}[{i}]", bad) for i, v in enumerate(x)]
    return x


def storable(record: Record) -> Record:
    """The record as it may be stored: no NaN or infinity anywhere (a note says which were dropped)."""
    bad: List[str] = []
    clean: Record = finite(record, "", bad)
    if bad:
        note = NOT_FINITE_NOTE.format(", ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
        if note not in clean.setdefault("notes", []):
            clean["notes"].append(note)
    return clean


COARSE_POINTS = 120  # a stored timeline by default: enough for a plot, ~2 KB instead of ~30 KB


def coarse(timeline: Any, points: int = COARSE_POINTS) -> Any:
    """A timeline of at most `points` steps with the same energy: neighbours merged, watts averaged
    over their widths. Its form is {"t": [end of each step, s], "watts": {name: [mean W, ...]}},
    the first step starting at 0."""
    if not isinstance(timeline, dict) or not isinstance(timeline.get("t"), list) or len(timeline["t"]) <= points:
        return timeline
    t, watts = timeline["t"], timeline.get("watts") or {}
    group = -(-len(t) // points)
    try:
        starts = [0.0, *t[:-1]]
        widths = [b - a for a, b in zip(starts, t)]
        out_t, out_w = [], {k: [] for k in watts}  # type: List[float], Dict[str, List[float]]
        for i in range(0, len(t), group):
            span = widths[i:i + group]
            total = sum(span)
            out_t.append(t[min(i + group, len(t)) - 1])
            for k, series in watts.items():
                joules = sum(w * d for w, d in zip(series[i:i + group], span))
                out_w[k].append(round(joules / total, 3) if total > 0 else 0.0)
    except (TypeError, ValueError):
        return timeline  # not the shape we write: keep it as it is
    return {**timeline, "t": out_t, "watts": out_w}


def check_record(record: Any) -> Record:
    """A record read back, or UnreadableRecord saying why: the figures every report uses must be numbers."""
    if not isinstance(record, dict):
        raise UnreadableRecord("not a JSON object")
    if not isinstance(record.get("command"), list) or not isinstance(record.get("status"), str):
        raise UnreadableRecord("no command or status")
    for section, key in (("energy", "total_kwh"), ("emissions", "kg")):
        v = (record.get(section) or {}).get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise UnreadableRecord(f"{section}.{key} is {v!r}, not a number")
    for key, v in (("duration_s", record.get("duration_s")),
                   ("intensity.g_per_kwh", (record.get("intensity") or {}).get("g_per_kwh"))):
        if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise UnreadableRecord(f"{key} is {v!r}, not a number")
    return cast(Record, record)


def writable(record: "RunRecord") -> Record:
    """A run record as the plain dict the stores write into (its id, notes)."""
    return cast(Record, record)


def load_json(value: Any) -> Any:
    """A JSON column as Python: SQLite gives text, psycopg already decoded it."""
    if isinstance(value, (bytes, str)):
        return json.loads(value)
    return value


class Store(ABC):
    """Where runs are kept. `where` names it in messages (a path, or a URL without its password)."""

    kind = "abstract"
    where = ""
    refused: Optional[str] = None  # why the store could not be opened for a run
    keep_timeline = False  # store each run's full timeline, not the coarse one (setting keep_timeline)

    def __init__(self) -> None:
        self.warnings: List[str] = []  # records skipped while reading, for the CLI to show

    # -- life cycle ------------------------------------------------------------------------------------
    @abstractmethod
    def connect(self, create: bool = True) -> object:
        """Open the store (creating it when `create`); StoreError (NoStore) when it cannot be used."""

    def open_for_run(self) -> Optional[str]:
        """Open for a run that is about to start. Never raises: an unusable store is a warning (returned),
        later saves fail with StoreError and the engine keeps the record aside."""
        try:
            self.connect()
        except StoreError as e:
            self.refused = str(e)
            return str(e)
        return None

    @abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        """The store's schema version (0 when it has none yet)."""
        return 0

    # -- writing ---------------------------------------------------------------------------------------
    @abstractmethod
    def begin(self, record: "RunRecord", started_ts: float) -> Optional[int]:
        """Store a starting run; its id (also set in the record), or None when it was spooled."""

    @abstractmethod
    def save(self, record: "RunRecord") -> None:
        """Store the record as it stands (a checkpoint or the final version); StoreError if it cannot."""

    @abstractmethod
    def delete(self, ids: Iterable[int]) -> int:
        """Remove runs by id in one transaction; unknown ids are ignored. Returns how many went."""

    def keep_aside(self, record: "RunRecord", text: Optional[str] = None) -> Path:
        """Last resort when the store failed: the record (as `text`) in a private file of its own, in
        the data directory's `kept` (store/kept.py), until `carbonrun sync` imports it; returns where."""
        from carbonrun.store import kept  # kept imports this module

        return kept.keep(writable(record), text)

    # -- reading ---------------------------------------------------------------------------------------
    @abstractmethod
    def get(self, ref: str) -> Record:
        """A run by `last`, `-N` (N-th most recent), numeric id, or uuid prefix; KeyError when not there."""

    @abstractmethod
    def query(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
              command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
              job: Optional[str] = None, brief: bool = False, summary: bool = False) -> List[Record]:
        """Runs, newest first. `brief` leaves out each timeline; `summary` gives only what a listing
        shows, read from small columns: id, uuid, started_at, status, command, tags, duration_s,
        exit_code, samples, measured (the label), energy {total_kwh, low_kwh, high_kwh}, emissions
        {kg, low_kg, high_kg}, intensity {g_per_kwh}; no components, no timeline."""

    @abstractmethod
    def summaries(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
                  command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
                  job: Optional[str] = None) -> List[Summary]:
        """query(summary=True) as Summary tuples, the lighter form for a listing of many runs."""

    @abstractmethod
    def count(self) -> int:
        ...

    @abstractmethod
    def ids(self, prefix: str = "") -> List[str]:
        """Run ids for shell completion (newest first); nothing when the store cannot be read."""

    @abstractmethod
    def prune_ids(self, keep: Optional[int] = None, older_than_days: Optional[float] = None,
                  now: Optional[float] = None) -> List[int]:
        """Ids beyond the newest `keep` AND older than the age given; a run still measured is never chosen."""



Row = Sequence[Any]


class SqlStore(Store):
    """Queries written once. SQL here uses `?` placeholders; a backend with another style rewrites them.

    A backend gives: `_rows` (run a read), the FROM clauses for records and summaries, the command,
    tags and timeline SQL, and the writes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._json_cache: Dict[str, Any] = {}

    FROM_RECORDS = "runs"  # id, record, status, owner
    FROM_SUMMARY = "runs"  # the small columns
    RECORD_COL = "record"  # JSON columns as selected: text, decoded row by row (one bad row skips alone)
    COMMAND_COL = "command"
    TAGS_COL = "tags"

    @abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> Iterable[Row]:
        """Rows of a read; StoreError (NoStore) for a store that cannot be read."""

    @abstractmethod
    def _command_filter(self) -> str:
        """SQL true when the command line (argv joined by spaces) matches a LIKE pattern `?`, any case."""

    @abstractmethod
    def _tags_filter(self, tags: Dict[str, str]) -> Tuple[str, List[Any]]:
        ...

    @abstractmethod
    def _timeline(self, run_id: int) -> Any:
        """The run's timeline kept apart from its record, or None."""

    # -- reading ---------------------------------------------------------------------------------------
    def _record(self, row: Row) -> Record:
        """A (id, record, status, owner) row as a record; UnreadableRecord when it cannot be read."""
        try:
            record = load_json(row[1])
        except (ValueError, RecursionError) as e:  # RecursionError: JSON nested beyond reason
            raise UnreadableRecord(f"bad JSON ({e})") from None
        record = check_record(record)
        record["id"] = row[0]
        if record.get("timeline", 0) is None:
            del record["timeline"]  # kept apart; `get` puts it back
        return self._live(record, row[2], row[3])

    @staticmethod
    def _live(record: Record, status: str, owner: Optional[str]) -> Record:
        if status == "running" and not owner_alive(owner):
            record["status"] = "incomplete"
            record.setdefault("notes", []).append(INCOMPLETE_NOTE)
        return record

    def _listed(self, row: Row) -> Summary:
        """A listing's row (the small columns) as a Summary; UnreadableRecord when it cannot be read."""
        (rid, uuid, started_at, status, owner, command, tags, duration, kwh, low_kwh, high_kwh, kg, low_kg, high_kg,
         g, measured, exit_code, samples) = row
        if kwh is None or kg is None:
            raise UnreadableRecord("its energy or emissions are not numbers")
        try:  # 100,000 rows must list in well under a second, and commands repeat: decoded once each
            command, tags = list(self._json_cache[command]), dict(self._json_cache[tags])
        except (KeyError, TypeError, ValueError):  # a text not seen yet, or not a list and a dict: the slow way
            try:
                command, tags = list(self._decoded(command)), dict(self._decoded(tags))
            except (ValueError, TypeError, RecursionError) as e:
                raise UnreadableRecord(f"bad JSON ({e})") from None
        if status == "running" and not owner_alive(owner):
            status = "incomplete"
        return Summary(rid, uuid, started_at, status, command, tags, duration, kwh, low_kwh, high_kwh, kg,
                       kg if low_kg is None else low_kg, kg if high_kg is None else high_kg, g, measured, exit_code,
                       samples)

    def _summary(self, row: Row) -> Record:
        """A listing's row as a brief record: no components, no timeline; the energy range and the
        measured label as computed when it was stored."""
        s = self._listed(row)
        record = {"id": s.id, "uuid": s.uuid, "started_at": s.started_at, "status": s.status, "command": s.command,
                  "tags": s.tags, "duration_s": s.duration_s, "exit_code": s.exit_code, "samples": s.samples,
                  "measured": s.measured,
                  "energy": {"total_kwh": s.total_kwh, "low_kwh": s.low_kwh, "high_kwh": s.high_kwh},
                  "emissions": {"kg": s.kg, "low_kg": s.low_kg, "high_kg": s.high_kg},
                  "intensity": {"g_per_kwh": s.g_per_kwh} if s.g_per_kwh is not None else {}}
        if s.status != row[3]:  # left running by a carbonrun that is gone
            record["notes"] = [INCOMPLETE_NOTE]
        return record

    def _decoded(self, value: Any) -> Any:
        """A JSON column decoded once per distinct text (the caller copies it before handing it out)."""
        if not isinstance(value, str):
            return value
        cache = self._json_cache
        if value not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[value] = json.loads(value)
        return cache[value]

    def _timeline_to_store(self, timeline: Any) -> Any:
        return timeline if self.keep_timeline else coarse(timeline)

    def _skip(self, run_id: Any, e: Exception) -> None:
        self.warnings.append(f"run #{run_id} cannot be read ({e}): skipped")

    def get(self, ref: str) -> Record:
        kind, value = parse_ref(ref)
        cols = f"SELECT id, {self.RECORD_COL}, status, owner FROM {self.FROM_RECORDS}"
        rows: List[Row] = []
        if kind == "offset":
            rows = list(self._rows(cols + " ORDER BY id DESC LIMIT 1 OFFSET ?", (value,)))
        elif kind == "id":
            rows = list(self._rows(cols + " WHERE id = ?", (value,)))
        if not rows and (kind == "uuid" or kind == "id" and len(str(value)) >= 4):
            # a uuid prefix (one of digits only when no run has that id)
            rows = list(self._rows(cols + " WHERE uuid LIKE ? LIMIT 2", (str(ref).strip().lower() + "%",)))
            if len(rows) > 1:
                raise KeyError(f"run reference {ref!r} is ambiguous (several uuids start with it)")
        if not rows:
            raise KeyError(f"no runs stored yet in {self.where}" if str(ref).strip() in ("last", "") else
                           f"no run {ref!r} in {self.where}")
        try:
            record = self._record(rows[0])
        except UnreadableRecord as e:
            raise UnreadableRun(f"run #{rows[0][0]} in {self.where} cannot be read ({e})") from None
        return self._with_timeline(record, rows[0][0])

    def _with_timeline(self, record: Record, run_id: int) -> Record:
        """The record with its timeline, kept apart in the store, put back."""
        if "timeline" not in record:
            timeline = self._timeline(run_id)
            if timeline is not None:
                record["timeline"] = load_json(timeline)
        return record

    def query(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
              command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
              job: Optional[str] = None, brief: bool = False, summary: bool = False) -> List[Record]:
        return self._matching(self._summary if summary else self._record, summary, brief,
                              limit=limit, tags=tags, command=command, status=status, since_ts=since_ts, job=job)

    def summaries(self, *, limit: Optional[int] = None, tags: Optional[Dict[str, str]] = None,
                  command: Optional[str] = None, status: Optional[str] = None, since_ts: Optional[float] = None,
                  job: Optional[str] = None) -> List[Summary]:
        return self._matching(self._listed, True, False,
                              limit=limit, tags=tags, command=command, status=status, since_ts=since_ts, job=job)

    def _matching(self, make: Callable[[Row], T], summary: bool, brief: bool, *, limit: Optional[int],
                  tags: Optional[Dict[str, str]], command: Optional[str], status: Optional[str],
                  since_ts: Optional[float], job: Optional[str]) -> List[T]:
        """The runs the filters match, newest first, each made from its row by `make` (skipped, with a
        warning, when it cannot be read); `summary`: from the small columns, else from the records."""
        where, args = ["1=1"], []  # type: List[str], List[Any]
        if status:
            where.append("status = ?")
            args.append("running" if status in ("running", "incomplete") else status)
        if since_ts is not None:
            where.append("started_ts >= ?")
            args.append(since_ts)
        if command:
            command = text(command)
            where.append(self._command_filter())
            args.append("%" + command.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if tags:
            sql, more = self._tags_filter({text(str(k)): text(str(v)) for k, v in tags.items()})
            where.append(sql)
            args += more
        if job is not None:
            where.append("job_id = ?")
            args.append(str(job))
        if summary:
            sql = (f"SELECT id, uuid, started_at, status, owner, {self.COMMAND_COL}, {self.TAGS_COL}, {_LISTED}"
                   f" FROM {self.FROM_SUMMARY}")
        else:
            sql = f"SELECT id, {self.RECORD_COL}, status, owner FROM {self.FROM_RECORDS}"
        sql += " WHERE " + " AND ".join(where) + " ORDER BY id DESC"
        live_only = status in ("running", "incomplete")
        out: List[Any] = []
        collecting = gc.isenabled()
        gc.disable()  # only new, acyclic dicts here: a listing of 100,000 runs spent a third of its time in GC
        try:
            for row in self._rows(sql, args):  # SQLite streams: reading stops at the limit
                if live_only and owner_alive(row[4 if summary else 3]) != (status == "running"):
                    continue
                try:
                    record: Any = make(row)
                except UnreadableRecord as e:
                    self._skip(row[0], e)
                    continue
                if brief:
                    record.pop("timeline", None)
                elif not summary:
                    self._with_timeline(record, row[0])
                out.append(record)
                if limit and len(out) >= limit:
                    break
        finally:
            if collecting:
                gc.enable()
        return out

    def count(self) -> int:
        return int(list(self._rows(f"SELECT count(*) FROM {self.FROM_SUMMARY}"))[0][0])

    def ids(self, prefix: str = "") -> List[str]:
        try:
            rows = list(self._rows(f"SELECT id FROM {self.FROM_SUMMARY} ORDER BY id DESC LIMIT 200"))
        except Exception:  # completion must never fail: no store, server away, damaged file
            return []
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def prune_ids(self, keep: Optional[int] = None, older_than_days: Optional[float] = None,
                  now: Optional[float] = None) -> List[int]:
        check_prune(keep, older_than_days)
        sql, args = f"SELECT id, status, owner FROM {self.FROM_SUMMARY} WHERE 1=1", []  # type: str, List[Any]
        if older_than_days is not None:
            sql += " AND started_ts < ?"
            args.append((time.time() if now is None else now) - older_than_days * 86400)
        if keep is not None:
            sql += f" AND id NOT IN (SELECT id FROM {self.FROM_SUMMARY} ORDER BY id DESC LIMIT ?)"
            args.append(keep)
        rows = list(self._rows(sql + " ORDER BY id", args))
        return [r[0] for r in rows if not (r[1] == "running" and owner_alive(r[2]))]


def summary_row(record: Record) -> Dict[str, Any]:
    """The SUMMARY_COLUMNS a backend writes beside the record: what a listing shows, computed once when
    the run is stored (the same for every store). None where a figure is not a finite number."""
    def num(v: Any) -> Optional[float]:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None

    try:
        _total, low, high = units.energy_bounds(record)
        measured: Optional[str] = units.measured_label(record)
    except (TypeError, ValueError, AttributeError, ZeroDivisionError):
        low = high = float("nan")
        measured = None
    em, job = record.get("emissions") or {}, record.get("job") or {}
    exit_code, samples = record.get("exit_code"), record.get("samples")
    total = (record.get("energy") or {}).get("total_kwh")
    return {"duration_s": num(record.get("duration_s")), "total_kwh": num(total),
            "low_kwh": num(low), "high_kwh": num(high), "kg": num(em.get("kg")), "low_kg": num(em.get("low_kg")),
            "high_kg": num(em.get("high_kg")), "g_per_kwh": num((record.get("intensity") or {}).get("g_per_kwh")),
            "measured": measured, "exit_code": exit_code if isinstance(exit_code, int) else None,
            "samples": samples if isinstance(samples, int) else None,
            "job_id": None if job.get("job_id") is None else str(job.get("job_id"))}


def summary_of(record: Record) -> Summary:
    """A record (full or brief) as the Summary a store would list for it (a missing figure reads 0)."""
    r: Any = record  # older records may lack any field
    cols = summary_row(record)
    return Summary(r.get("id"), r.get("uuid"), r.get("started_at"), r.get("status", ""), r.get("command", []),
                   r.get("tags") or {}, cols["duration_s"], cols["total_kwh"] or 0.0, cols["low_kwh"],
                   cols["high_kwh"], cols["kg"] or 0.0, cols["low_kg"], cols["high_kg"], cols["g_per_kwh"],
                   cols["measured"], cols["exit_code"], cols["samples"])


SUMMARY_COLUMNS = ("duration_s", "total_kwh", "low_kwh", "high_kwh", "kg", "low_kg", "high_kg", "g_per_kwh",
                   "measured", "exit_code", "samples", "job_id")
_LISTED = ", ".join(SUMMARY_COLUMNS[:-1])
