"""The run record (schema carbonrun.run/1): the one shape the store keeps and every report reads.

The record travels as plain JSON-compatible dicts; the TypedDicts below name its fields for the type
checker and cost nothing per record. Fields may be added within carbonrun.run/1, never renamed or
removed: stores, reports and older records rely on them.
"""
from __future__ import annotations

import os
import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, TypedDict, Union

from carbonrun import __version__, timefmt
from carbonrun.units import counted_key

if TYPE_CHECKING:
    from carbonrun.collectors.base import Meter
    from carbonrun.intensity.carbon import Intensity
    from carbonrun.measure.loop import Loop, Outcome

SCHEMA = "carbonrun.run/1"
INTERNAL_KEYS = ("base_notes", "pid")  # kept in the store for the engine, dropped from what reports print


class Host(TypedDict):
    name: str
    platform: str
    cpu_model: str
    cpu_threads: int
    memory_gb: Optional[float]
    gpus: List[Dict[str, Any]]
    virtualised: bool


class _ComponentBase(TypedDict):
    component: str  # cpu | dram | gpu | ram | psys
    device: str
    source: str
    estimated: bool
    counted: bool
    machine_j: float
    job_j: float
    low_j: float
    high_j: float


class Component(_ComponentBase, total=False):
    used_by_job: bool  # GPUs: did the job's processes ever use it
    metered_by: Optional[str]  # a launcher rank that points to its node's meter


class Usage(TypedDict):
    job_cpu_s: float
    machine_busy_cpu_s: float
    peak_rss_bytes: int


class Energy(TypedDict):
    machine_kwh: float
    job_kwh: float
    pue: float
    total_kwh: float


class Emissions(TypedDict):
    kg: float
    low_kg: float
    high_kg: float


class Timeline(TypedDict):
    t: List[float]
    watts: Dict[str, List[float]]


class _RunRecordBase(TypedDict):
    schema: str
    id: Optional[int]
    uuid: str
    command: List[str]
    cwd: str
    tags: Dict[str, str]
    host: Host
    started_at: str
    ended_at: Optional[str]
    duration_s: float
    status: str  # one of STATUSES
    exit_code: Optional[int]
    attribution: str  # process | machine
    interval_s: float
    samples: int
    components: List[Component]
    usage: Usage
    energy: Energy
    intensity: Dict[str, Any]  # intensity.carbon.Intensity.to_record()
    emissions: Emissions
    social_cost_usd: Dict[str, Any]
    timeline: Timeline
    notes: List[str]
    carbonrun_version: str


class RunRecord(_RunRecordBase, total=False):
    """One run. Sections below are present only when they apply."""

    pid: int  # internal: the measuring process
    base_notes: List[str]  # internal: notes that survive each fill
    job: Dict[str, Any]  # launcher (SLURM/torchrun): job, node, rank, role
    plan: Dict[str, Any]  # carbon-aware start (--start-within)
    embodied: Dict[str, Any]  # embodied carbon, beside (never in) emissions


def iso(ts: float) -> str:
    """ISO 8601 with the local offset, to the millisecond."""
    return timefmt.iso(ts, timespec="milliseconds")


def hostname() -> str:
    return os.environ.get("CARBONRUN_HOSTNAME") or os.uname().nodename


def platform_string() -> str:
    """Like platform.platform(), without importing it (start-up time)."""
    u = os.uname()
    return f"{u.sysname}-{u.release}-{u.machine}"


def uuid4() -> str:
    """A random RFC 4122 version-4 UUID, without importing uuid (it imports platform)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def host_info(proc_root: str, sys_root: str, gpus: List[Dict[str, Any]]) -> Host:
    # collectors load when a run starts, not for every reader of a record
    from carbonrun.collectors.estimate import cpu_model, is_virtualised
    from carbonrun.collectors.process import total_memory_bytes

    mem = total_memory_bytes(proc_root)
    return {
        "name": hostname(),
        "platform": platform_string(),
        "cpu_model": cpu_model(proc_root),
        "cpu_threads": os.cpu_count() or 1,
        "memory_gb": round(mem / 1e9, 2) if mem else None,
        "gpus": gpus,
        "virtualised": is_virtualised(proc_root, sys_root),
    }


def new_record(command: Sequence[str], tags: Dict[str, str], host: Host, attribution: str, interval: float,
               started_at: float) -> RunRecord:
    """The record as it stands when the run starts (status running)."""
    return {
        "schema": SCHEMA,
        "id": None,
        "uuid": uuid4(),
        "command": list(command),
        "cwd": os.getcwd(),
        "tags": dict(tags),
        "host": host,
        "started_at": iso(started_at),
        "ended_at": None,
        "duration_s": 0.0,
        "status": "running",
        "exit_code": None,
        "attribution": attribution,
        "interval_s": interval,
        "samples": 0,
        "components": [],
        "usage": {"job_cpu_s": 0.0, "machine_busy_cpu_s": 0.0, "peak_rss_bytes": 0},
        "energy": {"machine_kwh": 0.0, "job_kwh": 0.0, "pue": 1.0, "total_kwh": 0.0},
        "intensity": {},
        "emissions": {"kg": 0.0, "low_kg": 0.0, "high_kg": 0.0},
        "social_cost_usd": {},
        "timeline": {"t": [], "watts": {}},
        "notes": [],
        "carbonrun_version": __version__,
        "pid": os.getpid(),
    }


def fill(record: RunRecord, loop: Loop, intensity: Intensity, scc: Optional[Tuple[float, float, float]],
         final: bool) -> RunRecord:
    """Write the loop's figures into the record; `final` once the job has ended."""
    from carbonrun.intensity.carbon import social_cost  # while measuring only, not for readers

    acct, o = loop.acct, loop.outcome
    record["duration_s"] = round(o.duration_s if final else loop.elapsed, 3)
    record["samples"] = o.samples
    record["components"] = [_component(m, mj, jj, acct.attribution)
                            for m, mj, jj in zip(acct.meters, acct.machine_j, acct.job_j)]
    record["usage"] = {"job_cpu_s": round(o.job_cpu_s, 3), "machine_busy_cpu_s": round(o.busy_cpu_s, 3),
                       "peak_rss_bytes": o.peak_rss or (loop.tree.peak_rss if loop.tree else 0)}
    record["energy"] = {"machine_kwh": acct.kwh("machine"), "job_kwh": acct.kwh("job"), "pue": acct.pue,
                        "total_kwh": acct.total_kwh()}
    record["intensity"] = intensity.to_record()
    applied = acct.mean_intensity()
    if applied is not None and intensity.time_varying:
        record["intensity"]["g_per_kwh"] = round(applied, 2)
        if "series" in record["intensity"]:
            record["intensity"]["series"]["g_per_kwh_is"] = "energy-weighted mean over the run"
    record["emissions"] = {"kg": acct.kg, "low_kg": acct.kg_low, "high_kg": acct.kg_high}
    record["social_cost_usd"] = social_cost(acct.kg, scc) if scc else social_cost(acct.kg)
    record["timeline"] = acct.timeline.to_record()
    record["notes"] = list(dict.fromkeys(record.get("base_notes", []) + list(intensity.notes) + o.notes
                                         + [n for m in acct.meters for n in m.notes]))
    if final:
        record["ended_at"] = iso(o.ended_wall)
        record["exit_code"] = o.exit_code
        record["status"] = status_of(o)
    return record


def _sig(joules: float) -> float:
    """Six significant digits: short JSON, yet a millijoule job keeps its figure (the totals are exact, and
    the components must add up to them in every report)."""
    return float(f"{joules:.6g}")


def _component(m: Meter, machine_j: float, job_j: float, attribution: str) -> Component:
    counted = {"machine_j": machine_j, "job_j": job_j}[counted_key(attribution)]
    c: Component = {"component": m.component, "device": m.device, "source": m.source, "estimated": m.estimated,
                    "counted": m.counted, "machine_j": _sig(machine_j), "job_j": _sig(job_j),
                    "low_j": _sig(counted * m.low_factor), "high_j": _sig(counted * m.high_factor)}
    if hasattr(m, "touched"):  # GPUs: did the job's processes ever use it
        c["used_by_job"] = bool(m.touched)
    return c


# Every status a stored run can have, defined once: running (being measured), completed or failed (the
# command's exit code was 0 or not), interrupted (a signal ended it), incomplete (carbonrun itself stopped
# before the run ended; the store marks it so, with the figures of the last checkpoint).
STATUSES = ("running", "completed", "failed", "interrupted", "incomplete")


def status_of(outcome: Outcome) -> str:
    if outcome.interrupted:
        return "interrupted"
    return "completed" if outcome.exit_code == 0 else "failed"


def public(record: RunRecord) -> RunRecord:
    """The record as reports print it: internal keys dropped."""
    return {k: v for k, v in record.items() if k not in INTERNAL_KEYS}  # type: ignore[return-value]


def to_json(record: RunRecord, indent: Optional[int] = 2) -> str:
    """The record as JSON text (internal keys kept: this is also how a record is kept outside the store)."""
    return json.dumps(record, indent=indent)


def from_json(data: Union[str, bytes, Dict[str, Any]]) -> RunRecord:
    """A record from JSON text or a decoded dict. Raises ValueError (json.JSONDecodeError is one) for
    another schema or a record without a run's identity; other fields are read with .get() defaults
    by every reader, as records written by older versions may lack fields added since."""
    raw = json.loads(data) if isinstance(data, (str, bytes)) else data
    if not isinstance(raw, dict):
        raise ValueError("a run record is a JSON object")
    if raw.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} record (schema {raw.get('schema')!r})")
    missing = [k for k in ("uuid", "command", "started_at", "status") if k not in raw]
    if missing:
        raise ValueError(f"the run record lacks {', '.join(missing)}")
    return raw  # type: ignore[return-value]
