"""NVIDIA GPUs through nvidia-ml-py (pynvml): the energy counter where it works, else integrated power.

pynvml is imported inside the functions, never at module import, so importing this module costs nothing and
works on machines without the package or the driver. NVML is initialised once per process and shut down when
the last user (meter, doctor, power-limit call) lets go, so every meter's close() together make one
nvmlShutdown.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

from .base import ATTRIBUTION_STEP_S, Discovery, JobView, Meter, Probe

# read() asks NVML at most this often and returns the last value in between: ticks go down to 1 ms, and an
# NVML call is not free.
MIN_QUERY_S = 0.005
# job_share() lists the GPU's processes about once per attribution step; half a step of slack keeps tick
# jitter and coarse ticks (steps fall on ticks) from skipping a step's query.
_MIN_SHARE_GAP_S = ATTRIBUTION_STEP_S / 2

NO_LIBRARY_NOTE = "no GPU found: no NVIDIA driver library found (libnvidia-ml.so.1), so no GPU was measured"
NO_PYNVML_NOTE = "no GPU found: nvidia-ml-py (pynvml) is not importable, so no GPU was measured"
POWER_NOTE = (
    "{label}: no energy counter ({why}); its energy is integrated from power readings at each tick "
    "(trapezoid). On Ampere and newer GPUs the power reading is a one-second average, so short jobs are "
    "smoothed"
)
FORCE_POWER_ENV = "CARBONRUN_NVML_FORCE_POWER"  # hidden: "1" measures by power even where the counter works
MIG_NOTE = (
    "{label} is in MIG mode: its energy is for the whole physical GPU, shared by all MIG slices on it"
)


class NvmlError(RuntimeError):
    """An NVML call failed; the message says what was being done and why it failed."""


class PowerLimitPermissionError(NvmlError, PermissionError):
    """Setting a power limit needs root (NVML answered NO_PERMISSION)."""


# ---------------------------------------------------------------- one NVML initialisation per process

_lock = threading.Lock()
_refs = 0


def _import_pynvml() -> Optional[Any]:
    """pynvml, or None when nvidia-ml-py is missing or broken (never a crash)."""
    try:
        import pynvml  # the binding: only once the driver library is known to be there
    except Exception:
        return None
    return pynvml


def _acquire(nv: Any) -> None:
    """Take a reference on NVML, initialising it for the first user. Raises pynvml.NVMLError."""
    global _refs
    with _lock:
        if _refs == 0:
            nv.nvmlInit()
        _refs += 1


def _release(nv: Any) -> None:
    """Drop a reference; the last one shuts NVML down (once, for everyone)."""
    global _refs
    with _lock:
        if _refs == 0:
            return
        _refs -= 1
        if _refs == 0:
            try:
                nv.nvmlShutdown()
            except nv.NVMLError:
                pass


@contextmanager
def _nvml() -> Iterator[Any]:
    """pynvml with NVML initialised for the duration; NvmlError when it cannot start."""
    if not _library_present():
        raise NvmlError(NO_LIBRARY_NOTE)
    nv = _import_pynvml()
    if nv is None:
        raise NvmlError("nvidia-ml-py (pynvml) is not importable")
    try:
        _acquire(nv)
    except nv.NVMLError as e:
        raise NvmlError(_init_failure(nv, e)[0]) from e
    try:
        yield nv
    finally:
        _release(nv)


def _init_failure(nv: Any, err: Exception) -> Tuple[str, str]:
    """(note, doctor hint) for an nvmlInit failure."""
    code = getattr(err, "value", None)
    if code == nv.NVML_ERROR_LIBRARY_NOT_FOUND:
        return NO_LIBRARY_NOTE, "install the NVIDIA driver (it provides libnvidia-ml.so.1); check `nvidia-smi`"
    if code == nv.NVML_ERROR_DRIVER_NOT_LOADED:
        return (
            "no GPU found: the NVIDIA driver is not loaded (NVML: Driver Not Loaded), so no GPU was measured",
            "load the kernel module (`sudo modprobe nvidia`) or reboot after a driver update; check `nvidia-smi`",
        )
    if code == nv.NVML_ERROR_NO_PERMISSION:
        return (
            "no GPU measured: no permission to use NVML (Insufficient Permissions)",
            "check that your user may open /dev/nvidia* (group `video` or the driver's device permissions)",
        )
    return f"no GPU measured: NVML could not start ({err})", "check `nvidia-smi`"


# ---------------------------------------------------------------- which GPUs: CUDA_VISIBLE_DEVICES, --gpus


def _match(token: str, uuids: Sequence[str]) -> Optional[int]:
    """Position in `uuids` that `token` names: an index, or a unique (prefix of a) GPU UUID, as CUDA reads it."""
    tok = token.strip().lower()
    if tok.lstrip("-").isdigit():
        i = int(tok)
        return i if 0 <= i < len(uuids) else None
    if tok.startswith("mig-gpu-"):  # old MIG form MIG-GPU-<uuid>/<gi>/<ci>: its physical GPU
        tok = tok[4:].split("/")[0]
    if not tok or tok.startswith("mig-"):
        return None
    if not tok.startswith("gpu-"):
        tok = "gpu-" + tok
    hits = [i for i, u in enumerate(uuids) if u.lower().startswith(tok)]
    return hits[0] if len(hits) == 1 else None


def visible_gpus(
    spec: Optional[str], uuids: Sequence[str], resolve: Optional[Callable[[str], Optional[int]]] = None
) -> Tuple[List[int], List[str]]:
    """NVML indices CUDA would show for CUDA_VISIBLE_DEVICES=`spec`, in CUDA's order, and notes.

    As CUDA does: unset shows every GPU; entries are indices or UUID prefixes; the first entry that names no
    GPU hides itself and every entry after it. `resolve` maps a MIG UUID to its physical GPU's index.
    """
    if spec is None:
        return list(range(len(uuids))), []
    shown: List[int] = []
    notes: List[str] = []
    for token in spec.split(",") if spec.strip() else []:
        idx = _match(token, uuids)
        if idx is None and resolve is not None and token.strip().lower().startswith("mig-"):
            idx = resolve(token.strip())
        if idx is None or idx in shown:
            notes.append(
                f"CUDA_VISIBLE_DEVICES entry {token.strip()!r} names no GPU (or one already listed): "
                "it and the entries after it are hidden, as CUDA does"
            )
            break
        shown.append(idx)
    if not shown:
        notes.append(f"CUDA_VISIBLE_DEVICES={spec!r} hides every GPU: no GPU measured")
    return shown, notes


def select_gpus(spec: str, visible: Sequence[int], uuids: Sequence[str]) -> Tuple[List[int], List[str]]:
    """NVML indices that `--gpus` picks (all | none | positions among the visible GPUs or UUIDs), and notes."""
    text = (spec or "all").strip().lower()
    if text == "all":
        return list(visible), []
    if text == "none":
        return [], []
    chosen: List[int] = []
    notes: List[str] = []
    visible_uuids = [uuids[i] for i in visible]
    for token in text.split(","):
        pos = _match(token, visible_uuids)
        if pos is None:
            notes.append(f"--gpus {token.strip()!r} names no visible GPU: ignored")
        elif visible[pos] not in chosen:
            chosen.append(visible[pos])
    return chosen, notes


# ---------------------------------------------------------------- meters


class NvmlMeter(Meter):
    """One physical GPU. Subclasses say how joules are obtained; this class handles failures and attribution."""

    component = "gpu"

    def __init__(self, nv: Any, handle: Any, index: int, name: str, proc_root: str) -> None:
        super().__init__()
        self.device = f"gpu{index}"
        self.index = index
        self.name = name
        self.touched = False  # did any of the job's PIDs ever run on this GPU?
        self._nv = nv
        self._handle = handle
        self._proc_root = proc_root
        self._label = f"{self.device} ({name})"
        self._joules = 0.0
        self._last_query: Optional[float] = None
        self._share = 0.0
        self._share_at: Optional[float] = None
        self._lost = False
        self._closed = False
        self._noted: Set[str] = set()

    def read(self, now: float) -> float:
        """Joules since open; asks NVML at most every MIN_QUERY_S, keeps the last value on any failure."""
        if self._lost or self._closed:
            return self._joules
        if self._last_query is not None and now - self._last_query < MIN_QUERY_S:
            return self._joules
        self._last_query = now
        try:
            self._update(now)
        except self._nv.NVMLError as e:
            self._failed(e, "reading its energy")
        return self._joules

    def _update(self, now: float) -> None:
        raise NotImplementedError

    def _note_once(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.notes.append(text)

    def _failed(self, err: Exception, doing: str) -> None:
        """Turn an NVML failure into a note; a lost GPU stops being asked, its energy so far is kept."""
        if getattr(err, "value", None) == self._nv.NVML_ERROR_GPU_IS_LOST:
            self._lost = True
            self._note_once(
                f"{self._label} was lost mid-run (NVML: GPU is lost): its energy up to then "
                f"({self._joules:.1f} J) is kept, nothing after it is measured"
            )
        else:
            self._note_once(f"{self._label}: {doing} failed (NVML: {err}); the last good value is kept")

    def job_share(self, job: JobView) -> Optional[float]:
        """The job's share of this GPU: its compute processes that are the job's, split by memory if shared."""
        if self._lost or self._closed:
            return self._share
        if self._share_at is not None and self._last_query is not None:
            if self._last_query - self._share_at < _MIN_SHARE_GAP_S:
                return self._share
        self._share_at = self._last_query
        self._share = self._query_share(job.pids)
        return self._share

    def _query_share(self, pids: FrozenSet[int]) -> float:
        try:
            procs = self._nv.nvmlDeviceGetComputeRunningProcesses_v3(self._handle)
        except self._nv.NVMLError as e:
            if getattr(e, "value", None) == self._nv.NVML_ERROR_GPU_IS_LOST:
                self._failed(e, "listing its processes")
                return self._share
            self._note_once(
                f"{self._label}: cannot list its compute processes (NVML: {e}): the whole GPU is counted "
                "as the job's"
            )
            return 1.0
        if not procs and self.touched:
            return self._share  # the job just left the GPU: the energy since the last look was its own
        mine = [p for p in procs if p.pid in pids]
        if not mine:
            self._check_foreign(procs)
            return 0.0
        self.touched = True
        if len(mine) == len(procs):
            return 1.0
        return self._split(mine, procs)

    def _split(self, mine: List[Any], procs: List[Any]) -> float:
        """Share of a GPU the job shares with other processes: by used memory, else by process count."""
        used = [p.usedGpuMemory for p in procs]
        if None in used or sum(used) <= 0:
            self._note_once(
                f"{self._label} is shared with other processes and their memory use is unknown: the job's "
                "share is its number of processes over all processes on it"
            )
            return len(mine) / len(procs)
        self._note_once(
            f"{self._label} is shared with other processes: the job's share is split by GPU memory used "
            "(the job's processes' memory over all processes' memory)"
        )
        return float(sum(p.usedGpuMemory for p in mine) / sum(used))

    def _check_foreign(self, procs: List[Any]) -> None:
        """Say so when the GPU's processes are invisible here (a container's PID namespace)."""
        if procs and not any(os.path.exists(os.path.join(self._proc_root, str(p.pid))) for p in procs):
            pids = ", ".join(str(p.pid) for p in procs[:5])
            self._note_once(
                f"{self._label}: its compute processes (PID {pids}) are not visible here (another PID "
                "namespace, e.g. a container?): counted as not the job's; `--attribution machine` counts "
                "the whole GPU"
            )

    def close(self) -> None:
        """Drop this meter's NVML reference (the last meter's close shuts NVML down)."""
        if not self._closed:
            self._closed = True
            _release(self._nv)


class EnergyCounterMeter(NvmlMeter):
    """nvmlDeviceGetTotalEnergyConsumption: a millijoule counter, exact, Volta and newer."""

    source = "nvml-energy"

    def __init__(self, nv: Any, handle: Any, index: int, name: str, proc_root: str, first_mj: int) -> None:
        super().__init__(nv, handle, index, name, proc_root)
        self._base_mj = first_mj
        self._prev_mj = first_mj
        self._acc = 0.0

    def _update(self, now: float) -> None:
        mj = self._nv.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        if mj < self._prev_mj:  # counter restarted (driver reload): carry on from here
            self._note_once(f"{self._label}: its energy counter went backwards (driver reload?); continued")
            self._acc, self._base_mj = self._joules, mj
        self._prev_mj = mj
        self._joules = self._acc + (mj - self._base_mj) / 1000.0


class PowerMeter(NvmlMeter):
    """nvmlDeviceGetPowerUsage (mW) integrated by trapezoid between ticks; starts at the first read."""

    source = "nvml-power"

    def __init__(self, nv: Any, handle: Any, index: int, name: str, proc_root: str) -> None:
        super().__init__(nv, handle, index, name, proc_root)
        self._t: Optional[float] = None
        self._w = 0.0

    def _update(self, now: float) -> None:
        watts = self._nv.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        if self._t is not None and now > self._t:
            self._joules += (now - self._t) * (watts + self._w) / 2.0
        if self._t is None or now > self._t:
            self._t = now
        self._w = watts


# ---------------------------------------------------------------- discovery


def discover(probe: Probe) -> Discovery:
    """One meter per selected GPU; every missing piece (package, driver, counter) becomes a note."""
    found = Discovery()
    if (probe.gpus or "").strip().lower() == "none":
        found.notes.append("GPUs not measured (--gpus none)")
        return found
    if not _library_present():
        _problem(found, NO_LIBRARY_NOTE,
                 "install the NVIDIA driver (it provides libnvidia-ml.so.1); check `nvidia-smi`")
        return found
    nv = _import_pynvml()
    if nv is None:
        _problem(found, NO_PYNVML_NOTE, "pip install nvidia-ml-py")
        return found
    try:
        _acquire(nv)
    except nv.NVMLError as e:
        _problem(found, *_init_failure(nv, e))
        return found
    try:
        _discover_gpus(nv, probe, found)
    except Exception as e:  # a driver answering nonsense must not stop the run
        found.notes.append(f"GPU discovery stopped: {type(e).__name__}: {e}")
    finally:
        _release(nv)  # each meter holds its own reference
    return found


def _library_present() -> bool:
    """dlopen the driver library first: a machine without it never pays for importing the binding."""
    import ctypes  # on every run's start-up path: loaded only to probe for the driver

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def _problem(found: Discovery, note: str, hint: str) -> None:
    found.notes.append(note)
    found.details.append({"kind": "nvml", "name": "NVML", "readable": False, "reason": note, "hint": hint})


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), or None when NVML says no (optional facts such as the driver version)."""
    try:
        return fn(*args)
    except Exception:
        return None


def _discover_gpus(nv: Any, probe: Probe, found: Discovery) -> None:
    count = nv.nvmlDeviceGetCount()
    if count == 0:
        _problem(found, "no GPU found: NVML sees no NVIDIA GPU", "check `nvidia-smi`")
        return
    handles = [_try(nv.nvmlDeviceGetHandleByIndex, i) for i in range(count)]
    uuids = [(_try(nv.nvmlDeviceGetUUID, h) or "") if h is not None else "" for h in handles]
    visible, notes = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids, lambda u: _mig_parent(nv, u))
    chosen, more = select_gpus(probe.gpus, visible, uuids)
    found.notes.extend(notes + more)
    driver = _try(nv.nvmlSystemGetDriverVersion)
    for i in chosen:
        if handles[i] is None:
            found.notes.append(f"gpu{i}: NVML gives no handle for it: not measured")
            continue
        _open_gpu(nv, i, handles[i], uuids[i], driver, probe, found)


def _mig_parent(nv: Any, uuid: str) -> Optional[int]:
    """NVML index of the physical GPU a MIG instance UUID lives on, or None."""
    try:
        mig = nv.nvmlDeviceGetHandleByUUID(uuid)
        return int(nv.nvmlDeviceGetIndex(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
    except Exception:
        return None


def _energy_path(nv: Any, handle: Any) -> Tuple[Optional[str], Optional[int], str]:
    """(source, first counter reading, why not the counter): the counter, else power, else (None, None, why).
    FORCE_POWER_ENV=1 skips the counter, to check the power path against it (benchmarks/gpu_validate.py)."""
    if os.environ.get(FORCE_POWER_ENV) == "1":
        no_counter = f"skipped: {FORCE_POWER_ENV}=1"
    else:
        try:
            return "nvml-energy", nv.nvmlDeviceGetTotalEnergyConsumption(handle), ""
        except nv.NVMLError as e:
            no_counter = f"NVML: {e}"
    try:
        nv.nvmlDeviceGetPowerUsage(handle)
        return "nvml-power", None, no_counter
    except nv.NVMLError as e:
        return None, None, f"energy counter: {no_counter}; power reading: NVML: {e}"


def _mig_enabled(nv: Any, handle: Any) -> bool:
    mode = _try(nv.nvmlDeviceGetMigMode, handle)
    return bool(mode) and mode[0] == nv.NVML_DEVICE_MIG_ENABLE


def _open_gpu(nv: Any, index: int, handle: Any, uuid: str, driver: Optional[str], probe: Probe,
              found: Discovery) -> None:
    """Add GPU `index` to `found`: its host entry, doctor detail, meter and notes."""
    name = _try(nv.nvmlDeviceGetName, handle) or "NVIDIA GPU"
    label = f"gpu{index} ({name})"
    mig = _mig_enabled(nv, handle)
    source, first_mj, why = _energy_path(nv, handle)
    found.gpus.append(
        {"index": index, "name": name, "uuid": uuid, "driver": driver, "mig": mig, "energy_path": source}
    )
    found.details.append(
        {"kind": "nvml", "device": f"gpu{index}", "name": name, "index": index, "uuid": uuid,
         "readable": source is not None, "energy_path": source, "mig": mig,
         "reason": why or None, "hint": _hint(source, mig)}
    )
    if source is None:
        found.notes.append(f"{label} not measured: neither its energy counter nor its power reading works ({why})")
        return
    if source == "nvml-energy":
        meter: NvmlMeter = EnergyCounterMeter(nv, handle, index, name, probe.proc_root, first_mj or 0)
    else:
        meter = PowerMeter(nv, handle, index, name, probe.proc_root)
        found.notes.append(POWER_NOTE.format(label=label, why=why))
    if mig:
        found.notes.append(MIG_NOTE.format(label=label))
    _acquire(nv)
    found.meters.append(meter)


def _hint(source: Optional[str], mig: bool) -> Optional[str]:
    """What `doctor` says about a GPU's energy path."""
    parts = []
    if source == "nvml-power":
        parts.append("no energy counter (pre-Volta GPU?): power readings are integrated instead")
    elif source is None:
        parts.append("neither the energy counter nor power readings are readable: this GPU is not measured")
    if mig:
        parts.append("MIG on: energy is per physical GPU, shared by its slices")
    return "; ".join(parts) or None


def describe(probe: Probe) -> List[Dict[str, Any]]:
    """For `carbonrun doctor`: one dict per GPU (or per problem), with the energy path, MIG and a hint."""
    found = discover(probe)
    for meter in found.meters:
        meter.close()
    return found.details


# ---------------------------------------------------------------- power limits (for a power-limit sweep)


def _call(nv: Any, doing: str, fn: Callable[[], Any]) -> Any:
    """fn(), with NVML failures turned into NvmlError (PowerLimitPermissionError for NO_PERMISSION)."""
    try:
        return fn()
    except nv.NVMLError as e:
        if getattr(e, "value", None) == nv.NVML_ERROR_NO_PERMISSION:
            raise PowerLimitPermissionError(
                f"{doing} needs root (NVML: {e}): run as root, or set it with `sudo nvidia-smi -pl WATTS`"
            ) from e
        raise NvmlError(f"{doing} failed (NVML: {e})") from e


def _on_gpu(index: int, doing: str, call: Callable[[Any, Any], Any]) -> Any:
    """call(pynvml, handle of GPU `index`) with NVML up for the duration; failures as NvmlError."""
    with _nvml() as nv:
        return _call(nv, doing, lambda: call(nv, nv.nvmlDeviceGetHandleByIndex(index)))


def get_power_limit(index: int) -> int:
    """The power limit in force on GPU `index` (NVML index, as in host.gpus), in milliwatts."""
    return int(_on_gpu(index, f"reading gpu{index}'s power limit",
                       lambda nv, h: nv.nvmlDeviceGetPowerManagementLimit(h)))


def set_power_limit(index: int, milliwatts: int) -> None:
    """Set GPU `index`'s power limit (mW). PowerLimitPermissionError without root, NvmlError otherwise."""
    _on_gpu(index, f"setting gpu{index}'s power limit to {milliwatts} mW",
            lambda nv, h: nv.nvmlDeviceSetPowerManagementLimit(h, int(milliwatts)))


def power_limit_constraints(index: int) -> Tuple[int, int]:
    """(min, max) power limit GPU `index` accepts, in milliwatts."""
    lo, hi = _on_gpu(index, f"reading gpu{index}'s power limit range",
                     lambda nv, h: nv.nvmlDeviceGetPowerManagementLimitConstraints(h))
    return int(lo), int(hi)
