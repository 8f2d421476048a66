"""Runs started by a launcher (SLURM, torchrun): which job, node and rank, and who meters the node.

When several ranks on one node each run carbonrun, they all see the same machine counters. Exactly
one of them (the first to take an exclusive flock per job and node) meters the machine; the others
record a pointer to it and count no energy, so summing a job's runs never counts a node twice.

The node is metered for as long as any rank runs on it. The counters are cumulative, so when the
metering rank's command ends while others run, it leaves its meters' last raw positions beside the
lock (a hand-off file) and releases the lock; a pointer that finds the lock free (at a checkpoint,
or when its own command ends) takes it and meters the node from those positions: no energy falls
between the two. Where a position cannot be continued (no hand-off left, a power-only meter), the
gap is a note in the run and in `report --job`, never silent.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from carbonrun.record import RunRecord
    from carbonrun.settings import Settings

from carbonrun import paths
from carbonrun.collectors.base import JobView, Meter
from carbonrun.files import write_atomic
from carbonrun.accounting.energy import Accountant
from carbonrun.intensity.carbon import iso

ENV_HOSTNAME = "CARBONRUN_HOSTNAME"  # hidden: simulates several nodes on one machine (tests, demos)
WAIT_FOR_METER_S = 2.0


def hostname(env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    return env.get(ENV_HOSTNAME) or env.get("SLURMD_NODENAME") or os.uname().nodename


def _int(v: Optional[str]) -> Optional[int]:
    try:
        return int(str(v).strip())
    except (TypeError, ValueError):
        return None


def tasks_on_node(spec: Optional[str], node_index: Optional[int]) -> Optional[int]:
    """SLURM_TASKS_PER_NODE ("2(x3),1": two tasks on each of three nodes, then one) for one node."""
    if not spec or node_index is None:
        return None
    counts: List[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node_index] if 0 <= node_index < len(counts) else None


def detect(env: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
    """The job section for a run under torchrun or SLURM (torchrun wins: it knows the ranks), else None.

    Under both, the job id is SLURM's: unique across the cluster, where torchrun's run id may be "none"."""
    env = os.environ if env is None else env
    slurm_id = env.get("SLURM_JOB_ID")
    if env.get("TORCHELASTIC_RUN_ID"):
        return {"launcher": "torchrun", "job_id": slurm_id or env["TORCHELASTIC_RUN_ID"], "node": hostname(env),
                "node_index": _int(env.get("GROUP_RANK")), "rank": _int(env.get("RANK")),
                "local_rank": _int(env.get("LOCAL_RANK")), "world_size": _int(env.get("WORLD_SIZE")),
                "local_world_size": _int(env.get("LOCAL_WORLD_SIZE"))}
    if slurm_id:
        node_index = _int(env.get("SLURM_NODEID"))
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        return {"launcher": "slurm", "job_id": slurm_id, "node": hostname(env), "node_index": node_index,
                "rank": _int(env.get("SLURM_PROCID")), "local_rank": _int(env.get("SLURM_LOCALID")),
                "world_size": _int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS")),
                "local_world_size": tasks_on_node(per_node, node_index)}
    return None


def lock_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """Node-local and private: $XDG_RUNTIME_DIR/carbonrun, else /tmp/carbonrun-UID."""
    return paths.runtime_dir(env)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)[:100]


@dataclasses.dataclass(eq=False)
class Claim:
    """This run's place in its job; a meter keeps its lock file open until release()."""

    role: str
    metered_by: Optional[str] = None
    lock: Optional[IO[str]] = None
    path: Optional[Path] = None  # the node's lock file
    uuid: str = ""
    started: float = 0.0  # unix time this run claimed its place

    def release(self, meters: Sequence[Meter] = ()) -> None:
        """Leave the meters' last positions for a rank still running, then let go of the node."""
        if self.lock is not None:
            try:
                if self.path is not None and meters:
                    _leave_positions(self.path, self.uuid, meters)
                self.lock.truncate(0)  # a pointer arriving later must not read a finished meter's uuid
                fcntl.flock(self.lock, fcntl.LOCK_UN)
            finally:
                self.lock.close()
                self.lock = None

    def try_lock(self) -> bool:
        """A pointer takes the node's lock if its meter has let go of it."""
        if self.role != "pointer" or self.path is None:
            return False
        try:
            f = open(self.path, "a+")
        except OSError:
            return False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        f.truncate(0)
        f.write(f"{self.uuid} {os.getpid()}\n")
        f.flush()
        self.lock, self.role = f, "meter"
        return True


def handoff_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".handoff")


def _key(m: Meter) -> str:
    return f"{m.component}:{m.device}:{m.source}"


def _leave_positions(lock: Path, uuid: str, meters: Sequence[Meter]) -> None:
    positions = {_key(m): m.position() for m in meters}
    try:
        write_atomic(handoff_path(lock), json.dumps({"uuid": uuid, "ended": time.time(), "positions": positions}))
    except OSError:
        pass  # the next rank notes a gap


def _read_positions(lock: Path) -> Optional[Dict[str, Any]]:
    try:
        left: Any = json.loads(handoff_path(lock).read_text())
    except (OSError, ValueError):
        return None
    return left if isinstance(left, dict) and isinstance(left.get("positions"), dict) else None


def take_over(claim: Optional[Claim], loop: Any, record: "RunRecord") -> bool:
    """A pointer whose node's meter has ended meters the node from the positions it left.

    The loop's accountant is replaced by one counting the whole machine from those positions (the
    energy since the last meter's final reading lands in the first step); the record becomes the
    node's meter from then on. True when it took over."""
    if claim is None or not claim.try_lock():
        return False
    loop.tick(loop.clock())
    left = _read_positions(claim.path) if claim.path is not None else None
    fresh = left is not None and float(left.get("ended", 0)) >= claim.started - 1.0
    now = time.time()
    base, gaps = [], []
    for m, reading in zip(loop.meters, loop.readings):
        pos = left["positions"].get(_key(m)) if fresh and left else None
        at = m.reading_at(pos) if pos else None
        if at is None or at > reading:
            gaps.append(m.device)
            at = reading
        base.append(at)
    old = loop.acct
    acct = Accountant(loop.meters, old.intensity_over, old.pue, "machine")
    acct.baseline(base)
    acct.step(loop.now - loop.t0, loop.wall(), loop.readings, JobView(1.0, frozenset()))
    loop.acct = acct
    job = record["job"]
    previous = left.get("uuid") if fresh and left else job.get("metered_by")
    job.update(role="meter", metered_by=None, took_over_from=previous)
    record["attribution"] = "machine"
    node = job.get("node")
    if gaps:
        since = iso(float(left["ended"])) if fresh and left else "its meter's end (no readings were left)"
        job["gap_s"] = round(now - float(left["ended"]), 3) if fresh and left else None
        note = (f"node {node} was not metered from {since} to {iso(now)} for {', '.join(gaps)}: this run took "
                f"over metering the node then, from run {previous}")
    else:
        note = (f"this run took over metering node {node} at {iso(now)} from run {previous}, continuing its "
                "counters' last readings: no energy between the two is lost")
    record.setdefault("base_notes", []).append(note)
    return True


def _holder(f: IO[str]) -> Optional[str]:
    """The uuid the current lock holder wrote, once it has written it (and is alive)."""
    f.seek(0)
    parts = f.read().split()
    if len(parts) != 2 or not parts[1].isdigit():
        return None
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return parts[0]


def elect(path: Path, uuid: str, wait_s: float = WAIT_FOR_METER_S) -> Claim:
    """Take the node's lock (meter) or point to its holder (pointer)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_uid != os.getuid():
        raise PermissionError(f"{path.parent} belongs to another user")
    f = open(path, "a+")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            if holder is not None or time.monotonic() > deadline:
                f.close()
                return Claim("pointer", holder, path=path, uuid=uuid, started=time.time())
            time.sleep(0.01)
            continue
        f.truncate(0)
        f.write(f"{uuid} {os.getpid()}\n")
        f.flush()
        return Claim("meter", lock=f, path=path, uuid=uuid, started=time.time())


def claim(record: RunRecord, st: Settings) -> Tuple[Optional[Claim], Settings]:
    """Add the job section to a new record and elect the node's meter: returns (Claim or None, settings).

    A meter sharing its node with other ranks counts the whole machine (attribution `machine`): its
    own process tree is only one rank of the job."""
    job = detect()
    if job is None:
        return None, st
    notes: List[str] = []
    if os.environ.get(ENV_HOSTNAME):
        record["host"]["name"] = job["node"]
    try:
        c = elect(lock_dir() / f"job-{_safe(job['job_id'])}-{_safe(job['node'])}.lock", record["uuid"])
    except OSError as e:
        c = Claim("meter")
        notes.append(f"could not coordinate the ranks on this node ({e}): this run meters the node, and the"
                     " job may count it more than once")
    job.update(role=c.role, metered_by=c.metered_by)
    record["job"] = job
    if c.role == "pointer":
        notes.append(f"node metered by run {c.metered_by or '(unknown: its uuid was not readable)'}")
    elif (job["local_world_size"] or 1) > 1 and st.attribution == "process":
        st = dataclasses.replace(st, values={**st.values, "attribution": "machine"},
                                 sources={**st.sources, "attribution": f"{job['launcher']} (ranks share the node)"})
        record["attribution"] = "machine"
        notes.append(f"this run meters the whole node for job {job['job_id']}: {job['local_world_size']} ranks"
                     " share it, so the attribution is `machine`")
    record.setdefault("base_notes", []).extend(notes)  # base_notes survive each fill of the record
    record["notes"].extend(notes)
    return c, st


def mark(record: RunRecord) -> None:
    """A pointer run counts no node energy: its components are marked and every total is 0."""
    job = record.get("job") or {}
    if job.get("role") != "pointer":
        return
    for c in record.get("components", []):
        c.update({"machine_j": 0.0, "job_j": 0.0, "low_j": 0.0, "high_j": 0.0, "counted": False,
                  "metered_by": job.get("metered_by")})
    record["energy"].update({"machine_kwh": 0.0, "job_kwh": 0.0, "total_kwh": 0.0})
    record["emissions"] = {"kg": 0.0, "low_kg": 0.0, "high_kg": 0.0}
    sc = record.get("social_cost_usd") or {}
    for k in ("low", "central", "high"):
        if k in sc:
            sc[k] = 0.0


def job_records(store: Any, job_id: str) -> List[Dict[str, Any]]:
    """Every stored run of one job (filtered in the database)."""
    runs: List[Dict[str, Any]] = store.query(job=job_id)
    return runs


def aggregate(runs: List[Dict[str, Any]], job_id: str) -> Dict[str, Any]:
    """One job over all its nodes: the sum of the metering runs (one per node at a time), so each node
    counts once however many ranks it ran. Raises KeyError for a job with no runs."""
    if not runs:
        raise KeyError(f"no runs of job {job_id!r} in the store")
    uuids = {r["uuid"] for r in runs}
    nodes: Dict[str, Dict[str, Any]] = {}
    ranks = set()
    notes: List[str] = []
    for r in runs:
        j = r["job"]
        n = nodes.setdefault(j["node"], {"node": j["node"], "runs": 0, "metering_runs": 0, "ranks": set(),
                                         "total_kwh": 0.0, "machine_kwh": 0.0, "kg": 0.0, "low_kg": 0.0,
                                         "high_kg": 0.0, "duration_s": 0.0})
        n["runs"] += 1
        n["duration_s"] = max(n["duration_s"], r.get("duration_s") or 0.0)
        rank = j.get("rank") if j.get("rank") is not None else r["uuid"]
        ranks.add(rank)
        n["ranks"].add(rank)
        if j.get("role") == "meter":
            n["metering_runs"] += 1
            for k in ("total_kwh", "machine_kwh"):
                n[k] += r["energy"][k]
            for k in ("kg", "low_kg", "high_kg"):
                n[k] += r["emissions"][k]
        elif j.get("metered_by") not in uuids:
            notes.append(f"node {j['node']}: run {r['uuid']} points to run {j.get('metered_by')}, which is not in"
                         " this store: that node's energy is missing")
        if j.get("role") == "meter" and "took_over_from" in j and j.get("gap_s", 0) != 0:
            gap = j.get("gap_s")
            notes.append(f"node {j['node']}: {'%.1f s' % gap if gap is not None else 'an unknown time'} not metered "
                         f"before run {r['uuid']} took over from run {j.get('took_over_from')}")
        if r.get("status") in ("running", "incomplete"):
            notes.append(f"run {r['uuid']} on {j['node']} is {r['status']}: figures up to its last checkpoint")
    per_node = [{**n, "ranks": len(n["ranks"])} for _, n in sorted(nodes.items())]
    total = {k: sum(n[k] for n in per_node) for k in ("total_kwh", "machine_kwh", "kg", "low_kg", "high_kg")}
    starts = [r["started_at"] for r in runs if r.get("started_at")]
    ends = [r["ended_at"] for r in runs if r.get("ended_at")]
    when = datetime.fromisoformat  # stamps may carry different offsets
    return {
        "job_id": str(job_id), "launcher": runs[0]["job"].get("launcher"),
        "nodes": len(per_node), "ranks": len(ranks), "runs": len(runs),
        "metering_runs": sum(n["metering_runs"] for n in per_node),
        "energy": {"total_kwh": total["total_kwh"], "machine_kwh": total["machine_kwh"]},
        "emissions": {"kg": total["kg"], "low_kg": total["low_kg"], "high_kg": total["high_kg"]},
        "duration_s": max((r.get("duration_s") or 0.0) for r in runs),
        "started_at": min(starts, key=when) if starts else None,
        "ended_at": max(ends, key=when) if ends else None,
        "per_node": per_node, "notes": list(dict.fromkeys(notes)),
    }
