"""The run record (schema carbonrun.run/1): the one shape the store keeps and every report reads."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Dict, List, Optional

SCHEMA = "carbonrun.run/1"


def iso(ts: float) -> str:
    """ISO 8601 with the local offset, to the millisecond."""
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="milliseconds")


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


def host_info(proc_root: str, sys_root: str, gpus: List[dict]) -> dict:
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


def new_record(command: List[str], tags: Dict[str, str], host: dict, attribution: str, interval: float,
               started_at: float) -> dict:
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
        "carbonrun_version": _version(),
        "pid": os.getpid(),
    }


def _version() -> str:
    from carbonrun import __version__

    return __version__


def fill(record: dict, session, intensity, scc: Optional[tuple], final: bool) -> dict:
    """Write the session's figures into the record; `final` once the child has exited."""
    from carbonrun.intensity.carbon import social_cost

    acct, o = session.acct, session.outcome
    record["duration_s"] = round(o.duration_s if final else session.elapsed, 3)
    record["samples"] = o.samples
    record["components"] = [_component(m, mj, jj, acct.attribution)
                            for m, mj, jj in zip(acct.meters, acct.machine_j, acct.job_j)]
    record["usage"] = {"job_cpu_s": round(o.job_cpu_s, 3), "machine_busy_cpu_s": round(o.busy_cpu_s, 3),
                       "peak_rss_bytes": o.peak_rss or (session.tree.peak_rss if session.tree else 0)}
    record["energy"] = {"machine_kwh": acct.kwh("machine"), "job_kwh": acct.kwh("job"), "pue": acct.pue,
                        "total_kwh": acct.total_kwh()}
    record["intensity"] = intensity.to_record()
    applied = acct.mean_intensity()
    if applied is not None and intensity.time_varying:
        record["intensity"]["g_per_kwh"] = round(applied, 2)
    record["emissions"] = {"kg": acct.kg, "low_kg": acct.kg_low, "high_kg": acct.kg_high}
    record["social_cost_usd"] = social_cost(acct.kg, scc) if scc else social_cost(acct.kg)
    record["timeline"] = acct.timeline.to_record()
    notes = list(dict.fromkeys(record.get("base_notes", []) + list(intensity.notes) + o.notes
                               + [n for m in acct.meters for n in m.notes]))
    record["notes"] = notes
    if final:
        record["ended_at"] = iso(o.ended_wall)
        record["exit_code"] = o.exit_code
        record["status"] = status_of(o)
    return record


def _component(m, machine_j: float, job_j: float, attribution: str) -> dict:
    counted = job_j if attribution == "process" else machine_j
    c = {"component": m.component, "device": m.device, "source": m.source, "estimated": m.estimated,
         "counted": m.counted, "machine_j": round(machine_j, 3), "job_j": round(job_j, 3),
         "low_j": round(counted * m.low_factor, 3), "high_j": round(counted * m.high_factor, 3)}
    if hasattr(m, "touched"):  # GPUs: did the job's processes ever use it
        c["used_by_job"] = bool(m.touched)
    return c


def status_of(outcome) -> str:
    if outcome.interrupted:
        return "interrupted"
    return "completed" if outcome.exit_code == 0 else "failed"


def public(record: dict) -> dict:
    """The record as reports print it: internal keys dropped."""
    return {k: v for k, v in record.items() if k not in ("base_notes", "pid")}
