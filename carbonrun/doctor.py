"""What this machine can measure, what it would estimate, how to fix the rest: `carbonrun doctor`'s checks.

Each check returns plain data (the `--json` structure, documented in docs/usage.md); cli/doctor.py renders
it. exit_code answers the question scripts ask: 0 when a real counter (a readable RAPL zone or an NVML
GPU) is available, 1 when only estimates are possible. The network is used only when a live provider is
configured.
"""
from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from carbonrun.collectors import estimate, estimated_components, rapl
from carbonrun.collectors.base import Probe
from carbonrun.errors import CarbonrunError
from carbonrun.intensity import chain
from carbonrun.redact import redact_text
from carbonrun.settings import Settings
from carbonrun.store import open_store
from carbonrun.store.base import Store

SCHEMA = "carbonrun.doctor/1"
GROUP = "powercap"
CONTAINER_MOUNT = "-v /sys/class/powercap:/sys/class/powercap:ro"
MODPROBE = "sudo modprobe intel_rapl_msr   # Intel, and AMD Zen on Linux 5.11+; a VM usually has no RAPL"


# ------------------------------------------------------------------------------------------ RAPL


def in_container(root: str = "/") -> bool:
    """Docker/Podman marker files, or a container runtime in PID 1's cgroup (v1)."""
    for marker in (".dockerenv", "run/.containerenv"):
        if os.path.exists(os.path.join(root, marker)):
            return True
    try:
        with open(os.path.join(root, "proc/1/cgroup")) as f:
            cgroup = f.read()
    except OSError:
        return False
    return any(k in cgroup for k in ("docker", "kubepods", "containerd", "libpod", "lxc"))


def group_status(name: str = GROUP) -> Dict[str, Any]:
    """Does the group exist, is this user listed in it, and does this session already have it?"""
    try:
        g = grp.getgrnam(name)
    except KeyError:
        return {"name": name, "exists": False, "listed": False, "member": False}
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = ""
    member = g.gr_gid in os.getgroups() or g.gr_gid == os.getgid()
    return {"name": name, "exists": True, "listed": member or user in g.gr_mem, "member": member}


def is_meter_zone(name: str) -> bool:
    return name.startswith("package") or name in ("dram", "psys")


def _zone(detail: Dict[str, Any], measured_paths: Set[Optional[str]]) -> Dict[str, Any]:
    path = detail.get("path", "")
    return {"zone": os.path.basename(os.path.dirname(path)), "name": detail.get("name", ""), "path": path,
            "readable": bool(detail.get("readable")), "measured": path in measured_paths,
            "reason": detail.get("reason")}


def check_rapl(probe: Probe) -> Dict[str, Any]:
    """RAPL zones under the probe's root: readable or not, measured or not, and the fix."""
    found = rapl.discover(probe)
    paths = {getattr(m, "path", None) for m in found.meters}
    for m in found.meters:
        m.close()
    zones = [_zone(d, paths) for d in found.details if d.get("kind", "rapl") == "rapl"]
    blocked = [z for z in zones if is_meter_zone(z["name"]) and not z["readable"]]
    if sys.platform != "linux":
        state = "not-linux"
    elif not os.path.isdir(probe.rapl_root):
        state = "absent"
    elif not zones:
        state = "no-zones"
    else:
        state = "readable" if any(m.counted for m in found.meters) else "unreadable"
    # psys is read but never added to totals: alone it does not spare the CPU estimate.
    return {"root": probe.rapl_root, "state": state, "zones": zones,
            "measured": [m.device for m in found.meters if m.counted],
            "components": sorted({m.component for m in found.meters}), "notes": list(found.notes),
            "fix": _rapl_fix(state, bool(blocked))}


def _rapl_fix(state: str, blocked: bool) -> Optional[Dict[str, Any]]:
    """The exact commands for the problem found; None when nothing needs fixing."""
    container = (f"mount the host's tree: docker run {CONTAINER_MOUNT} ... (podman the same); "
                 "energy_uj must also be readable on the host, so apply the permission fix there")
    base = {"in_container": in_container(), "container": container}
    if state == "not-linux":
        return {**base, "why": f"RAPL is read through Linux powercap; this is {os.uname().sysname}: "
                               "only estimates are possible", "commands": [], "group": None}
    if state in ("absent", "no-zones"):
        return {**base, "why": "load the RAPL driver (on the host, for a container)",
                "commands": [MODPROBE], "group": None}
    if not blocked:
        return None
    return {**base, "why": "energy_uj is root-only since CVE-2020-8694: let a group read it",
            "commands": rapl.udev_fix(GROUP).splitlines(), "group": group_status(GROUP)}


# ------------------------------------------------------------------------------------------ GPUs


def _is_nvml(detail: Dict[str, Any]) -> bool:
    return "nvml" in (detail.get("collector"), detail.get("kind"))


def _gpu(detail: Dict[str, Any], measured: Set[str]) -> Dict[str, Any]:
    keys = ("index", "name", "uuid", "mig", "energy_path", "readable", "hint")
    gpu = {k: detail.get(k) for k in keys}
    gpu["measured"] = f"gpu{detail.get('index')}" in measured
    return gpu


def check_gpus(probe: Probe) -> Dict[str, Any]:
    """NVML GPUs with the energy path each supports; library or driver problems with their hint."""
    out: Dict[str, Any] = {"state": "none", "driver": None, "devices": [], "problems": [], "notes": []}
    if (probe.gpus or "").strip().lower() == "none":
        out.update(state="off", notes=["GPUs not checked (--gpus none)"])
        return out
    try:
        from carbonrun.collectors import nvml  # the NVML binding loads here, inside the guard

        found = nvml.discover(probe)
    except Exception as e:  # a broken driver binding must not stop the other checks
        out["problems"].append({"problem": f"NVML check failed: {type(e).__name__}: {e}", "hint": "check `nvidia-smi`"})
        return out
    measured = {m.device for m in found.meters}
    for m in found.meters:
        m.close()
    details = [d for d in found.details if _is_nvml(d)]
    out["devices"] = [_gpu(d, measured) for d in details if "index" in d]
    out["problems"] = [{"problem": d.get("problem") or d.get("reason"), "hint": d.get("hint")}
                       for d in details if "index" not in d]
    out["driver"] = next((g.get("driver") for g in found.gpus if g.get("driver")), None)
    out["notes"] = list(found.notes)
    if measured:
        out["state"] = "measured"
    elif out["devices"]:
        out["state"] = "unmeasured"
    return out


# ------------------------------------------------------------------------------------------ estimate


def check_estimate(probe: Probe, rapl_components: List[str]) -> Dict[str, Any]:
    """The estimate's method, and what `run` would use it for given the RAPL meters found."""
    found = estimate.discover(probe)
    detail = found.details[0] if found.details else {}
    used_for = [{"ram": "memory"}.get(c, c) for c in estimated_components(set(rapl_components))]
    return {"method": detail.get("method"), "virtualised": detail.get("virtualised"), "used_for": used_for}


# ------------------------------------------------------------------------------------------ intensity


def check_intensity(st: Settings) -> Dict[str, Any]:
    """The intensity a run would use now, and the chain that chose it (the code a run uses)."""
    try:
        ci = chain.from_settings(st, time.time())
    except CarbonrunError as e:
        return {"error": str(e), "chain": chain.explain(st, None), "g_per_kwh": None, "region": None,
                "source": None, "how": None, "notes": []}
    return {"error": None, "chain": chain.explain(st, ci), "g_per_kwh": round(ci.g_per_kwh, 3),
            "region": ci.region, "source": ci.source, "how": ci.how, "notes": list(ci.notes)}


# ------------------------------------------------------------------------------------------ store


def _creatable(path: Path) -> bool:
    """Could this user create `path` (its nearest existing ancestor is writable)?"""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK | os.X_OK)


def _store_report(kind: str, where: str) -> Dict[str, Any]:
    return {"kind": kind, "path": where, "exists": None, "ok": False, "schema_version": None, "runs": None,
            "mode": None, "writable": None, "error": None, "notes": []}


def _read(store: Store, out: Dict[str, Any]) -> None:
    """Schema version and run count through the store's interface; its error when it cannot be read."""
    try:
        store.connect(create=False)
        out.update(exists=True, schema_version=store.schema_version(), runs=store.count())
        out["ok"] = out["writable"] is not False
    except Exception as e:  # the store's own errors say what to do; redacted, as a driver may quote the URL
            out["error"] = redact_text(str(e))
    finally:
        store.close()


def check_store(st: Settings) -> Dict[str, Any]:
    """Where runs go and whether that works: schema version, record count, permissions, or the error."""
    store = open_store(st.store)
    out = _store_report(store.kind, store.where)
    if store.kind != "sqlite":  # a database (or `none`): only the store can say
        _read(store, out)
        return out
    path = Path(store.where)
    out["exists"] = os.path.lexists(path)
    if not out["exists"]:
        out["writable"] = out["ok"] = _creatable(path)
        out["notes"].append("no runs stored yet: the first run creates it" if out["ok"] else
                            f"cannot create {path}: set --store or CARBONRUN_HOME to a writable place")
        return out
    if path.is_symlink() or not path.is_file():  # a link, directory, device or FIFO: the store says why not
        _read(store, out)
        return out
    mode = stat.S_IMODE(path.stat().st_mode)
    out.update(mode=f"{mode:04o}", writable=os.access(path, os.W_OK))
    if mode & 0o077:
        out["notes"].append(f"readable by other users (mode {mode:04o}): chmod 600 {path}")
    _read(store, out)
    if not out["writable"]:
        out["notes"].append(f"not writable by this user: runs cannot be stored there (chmod u+w {path})")
    return out


# ------------------------------------------------------------------------------------------ all


def diagnose(st: Settings) -> Dict[str, Any]:
    """Every check, in the `--json` structure."""
    probe = Probe(rapl_root=st.rapl_root, proc_root=st.proc_root, gpus=st.gpus, interval=st.interval)
    rapl = check_rapl(probe)
    gpus = check_gpus(probe)
    measured = rapl["measured"] + [f"gpu{g['index']}" for g in gpus["devices"] if g["measured"]]
    return {"schema": SCHEMA, "exit_code": 0 if measured else 1, "measured": measured,
            "in_container": in_container(), "rapl": rapl, "gpus": gpus,
            "estimate": check_estimate(probe, rapl["components"]), "intensity": check_intensity(st),
            "store": check_store(st)}
