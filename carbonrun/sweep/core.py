"""The sweep's core: the grid of settings, GPU power limits set and put back, the Pareto set, objectives.

`carbonrun sweep` runs one command once per point of a grid (power limits x --param values), each run
measured and stored by carbonrun.measure.engine exactly as `carbonrun run` would. Prints nothing: the CLI side
(carbonrun/cli/sweep.py) renders progress, the table and the files.

Power limits are machine-wide and outlive the process that set them, so the originals are written to a
state file before the first change and put back by a try/finally and an atexit hook; after a SIGKILL,
`carbonrun sweep --restore` reads the state file and puts them back.
"""
from __future__ import annotations

import atexit
import html
import itertools
import json
import math
import os
import re
import shlex
import signal
import statistics
import time
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from carbonrun import paths
from carbonrun.collectors import nvml
from carbonrun.collectors.base import Probe
from carbonrun.errors import CarbonrunError
from carbonrun.files import private_dirs, write_atomic
from carbonrun.measure import engine
from carbonrun.measure.session import INTERRUPTING
from carbonrun.record import iso
from carbonrun.settings import Settings
from carbonrun.report import units as report_units
from carbonrun.store.owner import owner_alive, owner_token
from carbonrun.units import counted_key, joules

SCHEMA = "carbonrun.sweep/1"
STATE_SCHEMA = "carbonrun.sweep-limits/1"
LIMIT_PLACEHOLDER = "power_limit"  # {power_limit} in the command is the limit in watts
RESERVED = frozenset({LIMIT_PLACEHOLDER, "sweep"})  # tag keys the sweep writes itself
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ---------------------------------------------------------------- parsing the grid


@dataclass(frozen=True)
class Knob:
    """One --param: its values, and whether it reaches the command as {NAME} in argv or as env NAME."""

    name: str
    values: Tuple[str, ...]
    passed_as: str = "env"  # "placeholder" | "env"


def parse_limits(text: str) -> List[float]:
    """Watts from "150,200,250"; ValueError with the reason for anything else."""
    out: List[float] = []
    for item in text.split(","):
        try:
            w = float(item.strip())
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not a number of watts") from None
        if not math.isfinite(w) or w <= 0:
            raise ValueError(f"{item.strip()!r} is not a positive number of watts")
        if w in out:
            raise ValueError(f"{watts(w)} is given twice")
        out.append(w)
    return out


def parse_knob(text: str) -> Knob:
    """NAME=v1,v2,... ; NAME must be usable as an environment variable (and is not reserved)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise ValueError(f"{text!r} is not NAME=VALUE,VALUE,... (NAME: letters, digits, _)")
    if name in RESERVED:
        raise ValueError(f"{name!r} is reserved by the sweep")
    values = tuple(v.strip() for v in rest.split(","))
    if not rest.strip() or "" in values:
        raise ValueError(f"--param {name} has an empty value")
    if len(set(values)) != len(values):
        raise ValueError(f"--param {name} repeats a value")
    return Knob(name, values)


def bind_knobs(knobs: Sequence[Knob], argv: Sequence[str]) -> List[Knob]:
    """Each knob as a {NAME} placeholder when the command uses one, else as an environment variable."""
    names = [k.name for k in knobs]
    if len(set(names)) != len(names):
        raise ValueError("a --param name is given twice")
    return [Knob(k.name, k.values, "placeholder" if any("{%s}" % k.name in a for a in argv) else "env")
            for k in knobs]


def plan(limits_w: Sequence[float], knobs: Sequence[Knob]) -> List["Point"]:
    """The full grid, power limits outermost (so each limit is set once), knobs in the order given."""
    combos = list(itertools.product(*(k.values for k in knobs)))
    limits: List[Optional[float]] = list(limits_w) or [None]
    return [Point(limit, dict(zip((k.name for k in knobs), combo))) for limit in limits for combo in combos]


def command_for(argv: Sequence[str], point: "Point", knobs: Sequence[Knob]) -> Tuple[List[str], Dict[str, str]]:
    """(argv with placeholders filled, environment variables to set) for one point."""
    subs = {k.name: point.params[k.name] for k in knobs if k.passed_as == "placeholder"}
    if point.limit_w is not None:
        subs[LIMIT_PLACEHOLDER] = number(point.limit_w)
    out = []
    for arg in argv:
        for name, value in subs.items():
            arg = arg.replace("{%s}" % name, value)
        out.append(arg)
    return out, {k.name: point.params[k.name] for k in knobs if k.passed_as == "env"}


# ---------------------------------------------------------------- points and their figures


@dataclass
class RunResult:
    """The figures the sweep needs from one stored run."""

    id: Optional[int]
    status: str
    exit_code: Optional[int]
    time_s: float
    energy_j: float  # the run's energy as carbonrun reports it (job or machine by attribution, x PUE)
    gpu_j: Optional[float]  # the metered GPUs (job's or machine's share by attribution); None: no GPU
    digits: int = 4  # the precision energy_j's range allows (report/units.py), as every report shows it
    estimated: bool = False  # energy_j is (partly) estimated: shown with `~`

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "RunResult":
        key = counted_key(record.get("attribution", "process"))
        gpus = [c[key] for c in record.get("components", []) if c.get("component") == "gpu"]
        return cls(record.get("id"), record.get("status", "failed"), record.get("exit_code"),
                   float(record.get("duration_s", 0.0)), joules(float(record["energy"]["total_kwh"])),
                   sum(gpus) if gpus else None, report_units.record_digits(dict(record)),
                   report_units.is_estimated(dict(record)))

    @property
    def mark(self) -> str:
        return report_units.ESTIMATE if self.estimated else ""


@dataclass
class Point:
    """One setting of the grid and the runs made at it (several with --repeat)."""

    limit_w: Optional[float]
    params: Dict[str, str]
    runs: List[RunResult] = field(default_factory=list)
    pareto: bool = False
    recommended: bool = False
    cost: Optional[float] = None

    @property
    def label(self) -> str:
        parts = [watts(self.limit_w)] if self.limit_w is not None else []
        parts += [f"{k}={v}" for k, v in self.params.items()]
        return ", ".join(parts) or "(as is)"

    @property
    def status(self) -> str:
        """completed only when every run completed; else the worst: interrupted > failed."""
        if not self.runs:
            return "not run"
        states = {r.status for r in self.runs}
        for s in ("interrupted", "incomplete", "failed"):
            if s in states:
                return s
        return "completed"

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def _median(self, values: Sequence[Optional[float]]) -> Optional[float]:
        vals = [v for v in values if v is not None]
        return statistics.median(vals) if vals else None

    @property
    def time_s(self) -> Optional[float]:
        return self._median([r.time_s for r in self.runs])

    @property
    def energy_j(self) -> Optional[float]:
        return self._median([r.energy_j for r in self.runs])

    @property
    def gpu_j(self) -> Optional[float]:
        return self._median([r.gpu_j for r in self.runs])

    def digits(self, basis: str = "job") -> int:
        """The precision of the basis energy: the GPUs' counters are exact, the job's as its least sure run."""
        return 4 if basis == "gpu" else min((r.digits for r in self.runs), default=4)

    def mark(self, basis: str = "job") -> str:
        """`~` when the basis energy is (partly) estimated in any of the runs."""
        return report_units.ESTIMATE if basis != "gpu" and any(r.estimated for r in self.runs) else ""

    def basis_j(self, basis: str) -> Optional[float]:
        """The energy the objectives use: "job" (the run's energy) or "gpu" (the metered GPUs)."""
        return self.gpu_j if basis == "gpu" else self.energy_j

    def power_w(self, basis: str) -> Optional[float]:
        """Median energy over median time: consistent with the table's own columns."""
        e, t = self.basis_j(basis), self.time_s
        return e / t if e is not None and t else None

    def edp(self, basis: str) -> Optional[float]:
        """Energy-delay product, J*s, from the medians."""
        e, t = self.basis_j(basis), self.time_s
        return e * t if e is not None and t is not None else None

    def to_json(self, basis: str) -> Dict[str, Any]:
        return {
            "label": self.label, "power_limit_w": self.limit_w, "params": dict(self.params),
            "status": self.status, "runs": [asdict(r) for r in self.runs], "n": len(self.runs),
            "time_s": self.time_s, "energy_j": self.energy_j, "gpu_energy_j": self.gpu_j,
            "basis_energy_j": self.basis_j(basis), "power_w": self.power_w(basis), "edp_js": self.edp(basis),
            "cost": self.cost, "pareto": self.pareto, "recommended": self.recommended,
        }


# ---------------------------------------------------------------- Pareto set and objectives


def pareto(pairs: Sequence[Optional[Tuple[float, float]]]) -> List[bool]:
    """Which (energy, time) pairs no other pair beats on both (<= both, < one); None never is."""
    def dominated(a: Tuple[float, float]) -> bool:
        return any(b is not None and b[0] <= a[0] and b[1] <= a[1] and b != a for b in pairs)

    return [p is not None and not dominated(p) for p in pairs]


@dataclass(frozen=True)
class Objective:
    """What "best" means: least energy, least time, least energy x time, or Zeus's eta-weighted cost.

    eta cost (You, Chung, Chowdhury, "Zeus", NSDI 2023): eta x energy + (1 - eta) x max_power x time, where
    max_power (W) is the maximum power limit of the GPUs (summed over the GPUs used), which turns time into
    joules at full power; eta = 1 is energy only, eta = 0 is time only.
    """

    kind: str  # energy | time | edp | eta
    eta: float = 0.5

    @classmethod
    def parse(cls, text: str) -> "Objective":
        t = text.strip().lower()
        if t in ("energy", "time", "edp"):
            return cls(t)
        if t.startswith("eta="):
            try:
                eta = float(t[4:])
            except ValueError:
                eta = float("nan")
            if 0.0 <= eta <= 1.0:
                return cls("eta", eta)
            raise ValueError(f"eta must be a number from 0 to 1, not {t[4:]!r}")
        raise ValueError(f"{text!r} is not energy, time, edp or eta=X (0 <= X <= 1)")

    @property
    def text(self) -> str:
        return f"eta={self.eta:g}" if self.kind == "eta" else self.kind

    def cost(self, energy_j: float, time_s: float, max_power_w: Optional[float]) -> float:
        if self.kind == "energy":
            return energy_j
        if self.kind == "time":
            return time_s
        if self.kind == "edp":
            return energy_j * time_s
        if max_power_w is None:
            raise ValueError("the eta objective needs max_power_w")
        return self.eta * energy_j + (1 - self.eta) * max_power_w * time_s


def analyse(points: Sequence[Point], objective: Objective, basis: str, max_power_w: Optional[float]) -> Optional[int]:
    """Mark the Pareto set and costs on the completed points; returns the recommended point's index.

    Ties on cost go to the first point of the grid (the order the user gave).
    """
    pairs = [_pair(p, basis) for p in points]
    best: Optional[int] = None
    best_cost = math.inf
    for i, (p, pair, front) in enumerate(zip(points, pairs, pareto(pairs))):
        p.pareto, p.recommended = front, False
        p.cost = objective.cost(pair[0], pair[1], max_power_w) if pair is not None else None
        if p.cost is not None and p.cost < best_cost:
            best, best_cost = i, p.cost
    if best is not None:
        points[best].recommended = True
    return best


def _pair(p: Point, basis: str) -> Optional[Tuple[float, float]]:
    """(energy, time) of a completed point with both figures, else None (kept out of the analysis)."""
    e, t = p.basis_j(basis), p.time_s
    return (e, t) if p.ok and e is not None and t is not None else None


def observed_max_power(points: Sequence[Point], basis: str) -> Optional[float]:
    """Fallback max_power for eta when no GPU limit is known: the highest average power seen."""
    powers = [w for w in (p.power_w(basis) for p in points if p.ok) if w is not None]
    return max(powers) if powers else None


# ---------------------------------------------------------------- GPU power limits


@dataclass
class GpuLimit:
    """One GPU whose limit the sweep changes: its original limit and the range NVML accepts (mW)."""

    index: int
    uuid: str
    name: str
    original_mw: int
    min_mw: int = 0
    max_mw: int = 0


def sweep_gpus(gpus_spec: str, needs: str = "--power-limit",
               instead: str = "A sweep of --param alone needs no GPU") -> List[Dict[str, Any]]:
    """The GPUs --gpus and CUDA_VISIBLE_DEVICES select ({index, name, uuid}); a usage error naming the
    option that `needs` them when there is none."""
    if (gpus_spec or "").strip().lower() == "none":
        raise CarbonrunError(f"{needs} needs a GPU, but --gpus none selects none", 2)
    found = nvml.discover(Probe(gpus=gpus_spec or "all"))
    for m in found.meters:
        m.close()
    if not found.gpus:
        why = "; ".join(found.notes) or "NVML sees no NVIDIA GPU"
        raise CarbonrunError(f"{needs} needs an NVIDIA GPU with NVML, and none is usable here ({why}). {instead}", 2)
    return found.gpus


def read_limits(gpus: Sequence[Mapping[str, Any]]) -> List[GpuLimit]:
    """Each GPU's limit in force and its range, read before anything is changed."""
    out = []
    for g in gpus:
        try:
            lo, hi = nvml.power_limit_constraints(g["index"])
            out.append(GpuLimit(g["index"], g.get("uuid", ""), g.get("name", ""),
                                nvml.get_power_limit(g["index"]), lo, hi))
        except nvml.NvmlError as e:
            raise CarbonrunError(f"cannot sweep power limits: {e}", 2) from None
    return out


def check_range(limits_w: Sequence[float], gpus: Sequence[GpuLimit]) -> None:
    """Usage error naming every limit outside a GPU's range, before anything runs."""
    bad = [f"{watts(w)} is outside gpu{g.index}'s range {watts(g.min_mw / 1000)} to {watts(g.max_mw / 1000)}"
           for w in limits_w for g in gpus if not g.min_mw <= milliwatts(w) <= g.max_mw]
    if bad:
        raise CarbonrunError("--power-limit: " + "; ".join(bad) + ". Nothing was run", 2)


def check_permission(gpus: Sequence[GpuLimit]) -> None:
    """Set each GPU's limit to itself: the same permission check as a real change, changing nothing."""
    for g in gpus:
        try:
            nvml.set_power_limit(g.index, g.original_mw)
        except nvml.PowerLimitPermissionError as e:
            raise CarbonrunError(f"no permission to change GPU power limits (gpu{g.index}: NVML: "
                                 f"{e.__cause__ or e}): run the sweep as root (sudo carbonrun sweep ...). "
                                 "Nothing was run", 2) from None
        except nvml.NvmlError as e:
            raise CarbonrunError(f"cannot change GPU power limits, so nothing was run: {e}", 2) from None


def state_path(env: Optional[Mapping[str, str]] = None) -> Path:
    """Where the original limits wait while a sweep runs: carbonrun's home, else the XDG state dir."""
    return paths.state_dir(env) / "sweep-limits.json"


def read_state(path: Path) -> Optional[Dict[str, Any]]:
    """The state file, or None when there is none; a damaged one is a usage error naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CarbonrunError(f"{path} is not readable ({e}): check it and delete it by hand", 2) from None
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        raise CarbonrunError(f"{path} is not a carbonrun sweep state file: delete it by hand", 2)
    return data


def check_no_pending(path: Path) -> None:
    """Refuse to start while another sweep runs, or a killed one left limits changed."""
    state = read_state(path)
    if state is None:
        return
    if owner_alive(state.get("owner")):
        raise CarbonrunError(f"another sweep (pid {state.get('pid')}) is changing GPU power limits "
                             f"({path}); wait for it to finish", 2)
    raise CarbonrunError(f"a previous sweep (pid {state.get('pid')}) ended without restoring the GPU power "
                         f"limits; run `carbonrun sweep --restore` first ({path})", 2)


def _write_state(path: Path, sweep_id: str, gpus: Sequence[GpuLimit]) -> None:
    private_dirs(path.parent)
    data = {"schema": STATE_SCHEMA, "sweep": sweep_id, "pid": os.getpid(), "owner": owner_token(os.getpid()),
            "written_at": time.time(),
            "gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name, "limit_mw": g.original_mw} for g in gpus]}
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def _set_all(targets: Sequence[Tuple[int, int]]) -> List[str]:
    """Set (index, mW) on each GPU, carrying on past failures; returns one message per failure."""
    errors = []
    for index, mw in targets:
        try:
            nvml.set_power_limit(index, mw)
        except nvml.NvmlError as e:
            errors.append(str(e))
    return errors


class LimitGuard:
    """Sets the GPUs' power limit for each point and puts the originals back exactly once, whatever happens.

    arm() writes the state file before the first change and registers an atexit hook; restore() is called
    from the caller's finally as well, and is idempotent.
    """

    def __init__(self, gpus: Sequence[GpuLimit], path: Path, sweep_id: str) -> None:
        self.gpus = list(gpus)
        self.path = path
        self.sweep_id = sweep_id
        self.current_mw: Optional[int] = None
        self.errors: List[str] = []
        self._armed = False

    def arm(self) -> None:
        _write_state(self.path, self.sweep_id, self.gpus)
        self._armed = True
        atexit.register(self.restore)

    def apply(self, limit_w: float) -> None:
        """Set every GPU to limit_w; an NVML failure stops the sweep (the finally restores)."""
        mw = milliwatts(limit_w)
        if mw == self.current_mw:
            return
        errors = _set_all([(g.index, mw) for g in self.gpus])
        if errors:
            raise CarbonrunError("cannot set the power limit: " + "; ".join(errors), 1)
        self.current_mw = mw

    def restore(self) -> List[str]:
        """Put the original limits back; the state file goes only when every GPU is back."""
        if not self._armed:
            return self.errors
        self._armed = False
        atexit.unregister(self.restore)
        self.errors = _set_all([(g.index, g.original_mw) for g in self.gpus])
        if not self.errors:
            self.path.unlink(missing_ok=True)
        return self.errors


def restore_from_state(path: Path) -> Tuple[List[str], List[str]]:
    """`carbonrun sweep --restore`: (what was restored, failures); the GPUs are found again by UUID."""
    state = read_state(path)
    if state is None:
        return [], []
    if owner_alive(state.get("owner")):
        raise CarbonrunError(f"a sweep (pid {state.get('pid')}) is still running and puts the limits back "
                             "itself when it ends (Ctrl-C stops it)", 2)
    targets, done = [], []
    by_uuid = _indices_by_uuid()
    for g in state.get("gpus", []):
        index = by_uuid.get(g.get("uuid") or "", g["index"])
        targets.append((index, int(g["limit_mw"])))
        done.append(f"gpu{index} back to {watts(int(g['limit_mw']) / 1000)}")
    errors = _set_all(targets)
    if not errors:
        path.unlink()
    return done, errors


def _indices_by_uuid() -> Dict[str, int]:
    """NVML index of every GPU by UUID, CUDA_VISIBLE_DEVICES aside (limits are per physical GPU)."""
    hidden = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        found = nvml.discover(Probe(gpus="all"))
    finally:
        if hidden is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = hidden
    for m in found.meters:
        m.close()
    return {g["uuid"]: g["index"] for g in found.gpus if g.get("uuid")}


# ---------------------------------------------------------------- running the grid


@dataclass
class Sweep:
    """A planned sweep and, once run, its results."""

    argv: List[str]
    knobs: List[Knob]
    limits_w: List[float]
    repeat: int = 1
    stop_on_failure: bool = False
    id: str = field(default_factory=lambda: uuidlib.uuid4().hex[:8])
    points: List[Point] = field(default_factory=list)
    gpus: List[GpuLimit] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    stopped: Optional[str] = None  # why the sweep ended early: "interrupted" | "failure"
    signo: Optional[int] = None  # the interrupting signal, when known

    def __post_init__(self) -> None:
        if not self.points:
            self.points = plan(self.limits_w, self.knobs)


Progress = Callable[[int, int, Point, Optional[RunResult]], None]


def run_all(sw: Sweep, st: Settings, guard: Optional[LimitGuard], progress: Optional[Progress] = None) -> None:
    """Run every point (x repeat), stopping early on a signal or (if asked) a failure.

    Call carbonrun.measure.session.block_signals() first: a signal that lands between runs is then found pending
    here instead of killing the sweep with the limits changed.
    """
    total = len(sw.points) * sw.repeat
    n = 0
    for point in sw.points:
        for _ in range(sw.repeat):
            n += 1
            sw.signo = pending_interrupt()
            if sw.signo is not None:
                sw.stopped = "interrupted"
                return
            if progress:
                progress(n, total, point, None)
            argv, env = command_for(sw.argv, point, sw.knobs)
            prepared = engine.prepare(argv, point_settings(st, sw, point))
            if guard is not None and point.limit_w is not None:
                guard.apply(point.limit_w)
            with environment(env):
                record, outcome = engine.execute(prepared, argv)
            result = RunResult.from_record(record)
            point.runs.append(result)
            if progress:
                progress(n, total, point, result)
            if outcome.interrupted:
                sw.stopped, sw.signo = "interrupted", outcome.signalled or signal.SIGINT
                return
            if result.status != "completed" and sw.stop_on_failure:
                sw.stopped = "failure"
                return


def point_settings(st: Settings, sw: Sweep, point: Point) -> Settings:
    """The run's settings: the user's, with the sweep's tags added (they win over --tag)."""
    tags = dict(st.tags or {})
    tags["sweep"] = sw.id
    if point.limit_w is not None:
        tags[LIMIT_PLACEHOLDER] = number(point.limit_w)
    tags.update(point.params)
    return Settings({**st.values, "tags": tags}, dict(st.sources))


def pending_interrupt() -> Optional[int]:
    """Take an interrupting signal that arrived between runs (blocked, so pending); its number or None."""
    waiting = signal.sigpending() & INTERRUPTING
    if not waiting:
        return None
    info = signal.sigtimedwait(waiting, 0)
    return info.si_signo if info is not None else None


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set for one run (the session spawns with os.environ), then as it was."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def to_json(sw: Sweep, objective: Objective, basis: str, max_power: Tuple[Optional[float], str]) -> Dict[str, Any]:
    """The sweep as `--json` writes it (schema carbonrun.sweep/1)."""
    best = next((i for i, p in enumerate(sw.points) if p.recommended), None)
    return {
        "schema": SCHEMA, "sweep": sw.id, "command": list(sw.argv), "started_at": iso(sw.started_at),
        "power_limits_w": list(sw.limits_w),
        "params": [{"name": k.name, "values": list(k.values), "passed_as": k.passed_as} for k in sw.knobs],
        "repeat": sw.repeat, "objective": objective.text, "energy_basis": basis,
        "max_power_w": max_power[0], "max_power_basis": max_power[1],
        "gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name, "original_limit_w": g.original_mw / 1000,
                  "min_limit_w": g.min_mw / 1000, "max_limit_w": g.max_mw / 1000} for g in sw.gpus],
        "stopped": sw.stopped, "recommended": best,
        "points": [p.to_json(basis) for p in sw.points],
    }


# ---------------------------------------------------------------- units


def milliwatts(w: float) -> int:
    return int(round(w * 1000))


def number(x: float) -> str:
    """150.0 -> "150", 187.5 -> "187.5": how a limit appears in tags, placeholders and labels."""
    return f"{x:g}" if x != int(x) else str(int(x))


def watts(w: float) -> str:
    return f"{number(round(w, 3))} W"


def si(x: Optional[float], unit: str, digits: int = 3, mark: str = "") -> str:
    """1234.5 W -> "1.23 kW": `digits` significant digits, SI prefixes (energy as J, Wh, kWh), after `mark`
    (`~` for an estimate); "-" when unknown."""
    if x is None:
        return "-"
    if unit == "J":  # energy reads as in every other report: J, Wh, kWh (report/units.py)
        return mark + report_units.joules(x, digits)
    x = report_units.round_sig(x, digits)  # 999.9 W is "1.00 kW", not "1,000 W"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "\u00b5"), (1e-9, "n")):
        if abs(x) >= scale:
            return f"{mark}{report_units.sig(x / scale, digits)} {prefix}{unit}"
    return f"{mark}{report_units.sig(x, digits)} {unit}"  # never exponent notation, however small


# ---------------------------------------------------------------- the plot and the page


_W, _H, _L, _R, _T, _B = 600, 380, 78, 24, 20, 52  # size and margins of the plot, px


def _ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _span(values: Sequence[float]) -> Tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad


def _energy_scale(hi: float) -> Tuple[float, str]:
    for scale, unit in ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ")):
        if hi >= scale:
            return scale, unit
    return 1.0, "J"


def render_svg(points: Sequence[Mapping[str, Any]], energy_key: str = "basis_energy_j") -> str:
    """Energy against time as an inline SVG scatter, the Pareto front drawn through its points.

    `points` are Point.to_json() dicts (the `points` of the --json file); points without both figures
    are left out. Self-contained: no scripts, fonts or links; every label is escaped.
    """
    pts = [p for p in points if p.get(energy_key) is not None and p.get("time_s") is not None]
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
            'role="img" aria-label="energy against time for each setting" font-family="sans-serif" '
            'font-size="11">')
    if not pts:
        return head + f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no completed point</text></svg>'
    xs, ys = [float(p["time_s"]) for p in pts], [float(p[energy_key]) for p in pts]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)
    scale, unit = _energy_scale(y1)

    def px(x: float) -> float:
        return round(_L + (x - x0) / (x1 - x0) * (_W - _L - _R), 1)

    def py(y: float) -> float:
        return round(_H - _B - (y - y0) / (y1 - y0) * (_H - _T - _B), 1)

    parts = [head, f"<title>energy against time ({len(pts)} settings)</title>",
             f'<rect x="{_L}" y="{_T}" width="{_W - _L - _R}" height="{_H - _T - _B}" fill="none" stroke="#888"/>']
    for t in _ticks(x0, x1):
        parts.append(f'<line x1="{px(t)}" y1="{_H - _B}" x2="{px(t)}" y2="{_H - _B + 4}" stroke="#888"/>'
                     f'<text x="{px(t)}" y="{_H - _B + 16}" text-anchor="middle">{t:g}</text>')
    for e in _ticks(y0, y1):
        parts.append(f'<line x1="{_L - 4}" y1="{py(e)}" x2="{_L}" y2="{py(e)}" stroke="#888"/>'
                     f'<text x="{_L - 7}" y="{py(e) + 4}" text-anchor="end">{e / scale:g}</text>')
    parts.append(f'<text x="{(_L + _W - _R) / 2}" y="{_H - 12}" text-anchor="middle">time (s)</text>'
                 f'<text transform="translate(16 {(_T + _H - _B) / 2}) rotate(-90)" text-anchor="middle">'
                 f'energy ({unit})</text>')
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: float(p["time_s"]))
    if len(front) > 1:
        line = " ".join(f"{px(float(p['time_s']))},{py(float(p[energy_key]))}" for p in front)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#c0392b" stroke-width="1.5" '
                     'stroke-dasharray="5 3"/>')
    for p in pts:
        parts.append(_marker(p, px(float(p["time_s"])), py(float(p[energy_key])), energy_key))
    parts.append("</svg>")
    return "".join(parts)


def _marker(p: Mapping[str, Any], x: float, y: float, energy_key: str) -> str:
    label = html.escape(str(p.get("label", "")), quote=True)
    tip = html.escape(f"{p.get('label', '')}: {si(float(p['time_s']), 's')}, {si(float(p[energy_key]), 'J')}"
                      + (", Pareto-optimal" if p.get("pareto") else "")
                      + (", recommended" if p.get("recommended") else ""), quote=True)
    fill = "#c0392b" if p.get("pareto") else "#7f8c8d"
    right = x > (_L + _W - _R) / 2  # labels of the right half go to the left of their point
    text_at = f'x="{x - 8}" text-anchor="end"' if right else f'x="{x + 8}"'
    ring = (f'<circle cx="{x}" cy="{y}" r="9" fill="none" stroke="#2471a3" stroke-width="2"/>'
            if p.get("recommended") else "")
    return (f'<g>{ring}<circle cx="{x}" cy="{y}" r="5" fill="{fill}"><title>{tip}</title></circle>'
            f'<text {text_at} y="{y - 7}" fill="#333">{label}</text></g>')


def render_html(data: Mapping[str, Any], rows: Sequence[Sequence[str]], header: Sequence[str],
                lines: Sequence[str]) -> str:
    """A small self-contained page: the table (cells as the terminal shows them), the plot, the notes."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    notes = "".join(f"<li>{e(line)}</li>" for line in lines)
    cmd = shlex.join(data.get("command", []))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>carbonrun sweep {e(str(data.get('sweep', '')))}</title><style>"
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
        "th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
        "th:nth-child(-n+2),td:nth-child(-n+2){text-align:left}code{background:#f4f4f4;padding:0 .2em}"
        "</style></head><body>"
        f"<h1>carbonrun sweep {e(str(data.get('sweep', '')))}</h1><p>command: <code>{e(cmd)}</code></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Energy against time</h2>{render_svg(data.get('points', []))}"
        f"<ul>{notes}</ul></body></html>\n"
    )
