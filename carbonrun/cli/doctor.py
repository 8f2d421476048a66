"""`carbonrun doctor`: what this machine can measure, what it would estimate, and how to fix the rest.

Checks gather plain dicts (the `--json` structure, documented in docs/usage.md); one renderer turns
them into text. The exit code answers the question scripts ask: 0 when a real counter (a readable
RAPL zone or an NVML GPU) is available, 1 when only estimates are possible.
"""
from __future__ import annotations

import json
import os
import platform
import stat
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import click

from carbonrun.cli.run import flag_values, options
from carbonrun.collectors.base import Probe
from carbonrun.errors import CarbonrunError
from carbonrun.settings import Settings

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
    import grp
    import pwd

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


def _is_meter_zone(name: str) -> bool:
    return name.startswith("package") or name in ("dram", "psys")


def _zone(detail: dict, measured_paths: set) -> dict:
    path = detail.get("path", "")
    return {"zone": os.path.basename(os.path.dirname(path)), "name": detail.get("name", ""), "path": path,
            "readable": bool(detail.get("readable")), "measured": path in measured_paths,
            "reason": detail.get("reason")}


def check_rapl(probe: Probe) -> Dict[str, Any]:
    """RAPL zones under the probe's root: readable or not, measured or not, and the fix."""
    from carbonrun.collectors import rapl

    found = rapl.discover(probe)
    paths = {getattr(m, "path", None) for m in found.meters}
    for m in found.meters:
        m.close()
    zones = [_zone(d, paths) for d in found.details if d.get("kind", "rapl") == "rapl"]
    blocked = [z for z in zones if _is_meter_zone(z["name"]) and not z["readable"]]
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
        return {**base, "why": f"RAPL is read through Linux powercap; this is {platform.system()}: "
                               "only estimates are possible", "commands": [], "group": None}
    if state in ("absent", "no-zones"):
        return {**base, "why": "load the RAPL driver (on the host, for a container)",
                "commands": [MODPROBE], "group": None}
    if not blocked:
        return None
    from carbonrun.collectors.rapl import udev_fix

    return {**base, "why": "energy_uj is root-only since CVE-2020-8694: let a group read it",
            "commands": udev_fix(GROUP).splitlines(), "group": group_status(GROUP)}


# ------------------------------------------------------------------------------------------ GPUs


def _is_nvml(detail: dict) -> bool:
    return "nvml" in (detail.get("collector"), detail.get("kind"))


def _gpu(detail: dict, measured: set) -> Dict[str, Any]:
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
        from carbonrun.collectors import nvml

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
    from carbonrun.collectors import estimate

    found = estimate.discover(probe)
    detail = found.details[0] if found.details else {}
    if "cpu" not in rapl_components:
        used_for = ["cpu", "memory"]
    elif "dram" not in rapl_components:
        used_for = ["memory"]
    else:
        used_for = []
    return {"method": detail.get("method"), "virtualised": detail.get("virtualised"), "used_for": used_for}


# ------------------------------------------------------------------------------------------ intensity

_STEP_OF_SOURCE = {"flag": "intensity", "file": "intensity-file", "timezone": "timezone",
                   "world-average": "world-average"}


def _chain(st: Settings) -> List[Dict[str, Any]]:
    """Every step of the intensity order with what this machine has for it."""
    from carbonrun.intensity.carbon import WORLD_AVERAGE_G
    from carbonrun.intensity.regions import guess_from_timezone, local_timezone

    zone = local_timezone()
    code = guess_from_timezone(zone) if zone else None
    tz = f"{zone} -> {code}" if code else f"{zone or 'unknown'} (no country)"
    given = [("intensity", "--intensity", st.intensity), ("intensity-file", "--intensity-file", st.intensity_file),
             ("provider", "live provider", st.provider), ("region", "region", st.region)]
    steps = [{"step": s, "label": label, "state": f"set: {v}" if v is not None else "not set"}
             for s, label, v in given]
    steps.append({"step": "timezone", "label": "time zone", "state": tz})
    steps.append({"step": "world-average", "label": "world average", "state": f"{WORLD_AVERAGE_G:g} g CO2eq/kWh"})
    return steps


def check_intensity(st: Settings) -> Dict[str, Any]:
    """The intensity a run would use now; the network is used only when a provider is configured."""
    from carbonrun.measure.engine import resolve_intensity

    chain = _chain(st)
    try:
        ci = resolve_intensity(st, time.time())
    except CarbonrunError as e:
        return {"error": str(e), "chain": chain, "g_per_kwh": None, "region": None, "source": None,
                "how": None, "notes": []}
    source = ci.source
    used = _STEP_OF_SOURCE.get(source) or ("provider" if source.startswith("provider:") else "region")
    for step in chain:
        step["used"] = step["step"] == used
    return {"error": None, "chain": chain, "g_per_kwh": round(ci.g_per_kwh, 3), "region": ci.region,
            "source": source, "how": ci.how, "notes": list(ci.notes)}


# ------------------------------------------------------------------------------------------ store


def _creatable(path: Path) -> bool:
    """Could this user create `path` (its nearest existing ancestor is writable)?"""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK | os.X_OK)


def _check_database(url: str) -> Dict[str, Any]:
    """A shared PostgreSQL store: can it be reached, and how many runs does it hold?"""
    from carbonrun.store import open_store, redact

    out: Dict[str, Any] = {"kind": "postgresql", "path": redact(url), "exists": None, "ok": False,
                           "schema_version": None, "runs": None, "mode": None, "writable": None,
                           "error": None, "notes": []}
    store = open_store(url)
    try:
        store.connect(create=False)
        out.update(exists=True, runs=store.count(), ok=True)
    except Exception as e:  # the store's own errors say what to do; the password is never in them
        out["error"] = redact(str(e))
    finally:
        store.close()
    return out


def check_store(st: Settings) -> Dict[str, Any]:
    """Where runs go and whether that works: schema version, record count, permissions, or the error."""
    from carbonrun.store.sqlite import Store, default_path
    from carbonrun.store import is_url

    if is_url(st.store):
        return _check_database(st.store)
    path = Path(st.store) if st.store else default_path()
    out: Dict[str, Any] = {"kind": "sqlite", "path": str(path), "exists": path.is_file(), "ok": False,
                           "schema_version": None, "runs": None, "mode": None, "writable": None,
                           "error": None, "notes": []}
    if not out["exists"]:
        out["writable"] = out["ok"] = _creatable(path)
        out["notes"].append("no runs stored yet: the first run creates it" if out["ok"] else
                            f"cannot create {path}: set --store or CARBONRUN_HOME to a writable place")
        return out
    mode = stat.S_IMODE(path.stat().st_mode)
    out.update(mode=f"{mode:04o}", writable=os.access(path, os.W_OK))
    if mode & 0o077:
        out["notes"].append(f"readable by other users (mode {mode:04o}): chmod 600 {path}")
    store = Store(path)
    try:
        store.connect(create=False)
        out["schema_version"] = store.schema_version()
        out["runs"] = store.count()
        out["ok"] = bool(out["writable"])
    except Exception as e:  # StoreError says what to do; sqlite errors are shown as they are
        out["error"] = str(e)
    finally:
        store.close()
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


# ------------------------------------------------------------------------------------------ text


class Text:
    """Lines with optional colour on the status marks (none for NO_COLOR or a non-terminal)."""

    MARKS = {True: ("ok", "green"), False: ("no", "red"), None: ("--", None)}

    def __init__(self, color: bool) -> None:
        self.color = color
        self.lines: List[str] = []

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def mark(self, ok: Optional[bool]) -> str:
        word, colour = self.MARKS[ok]
        return click.style(word, fg=colour, bold=True) if self.color and colour else word

    def head(self, title: str) -> str:
        return click.style(title, bold=True) if self.color else title


def _zone_mark(z: dict) -> Optional[bool]:
    if z["measured"]:
        return True
    return False if _is_meter_zone(z["name"]) and not z["readable"] else None


def _text_rapl(t: Text, rapl: dict) -> None:
    t.add(f"  RAPL  {rapl['root']}")
    for z in rapl["zones"]:
        what = "measured" if z["measured"] and not z["reason"] else (z["reason"] or "readable")
        t.add(f"    {t.mark(_zone_mark(z))}  {z['name'] or '?':<10} {z['zone']:<18} {what}")
    if not rapl["zones"]:
        t.add(f"    {t.mark(False)}  {rapl['notes'][0] if rapl['notes'] else 'no RAPL zones'}")
    fix = rapl["fix"]
    if fix:
        t.add(f"    fix: {fix['why']}")
        for command in fix["commands"]:
            t.add(f"      {command}")
        _text_group(t, fix.get("group"))
        lead = "this is a container: " if fix["in_container"] else "in a container: "
        t.add(f"    {lead}{fix['container']}")


def _text_group(t: Text, group: Optional[dict]) -> None:
    if not group:
        return
    name = group["name"]
    if group["member"]:
        t.add(f"    you are in group {name}: once the rule is applied, energy_uj is readable")
    elif group["listed"]:
        t.add(f"    you are listed in group {name} but this session is not: log in again (or `newgrp {name}`)")
    else:
        state = "" if group["exists"] else " (it does not exist yet)"
        t.add(f"    you are not in group {name}{state}: the first command above adds you")


def _text_gpus(t: Text, gpus: dict) -> None:
    t.add("  NVIDIA GPUs" + (f"  driver {gpus['driver']}" if gpus["driver"] else ""))
    paths = {"nvml-energy": "energy counter", "nvml-power": "power readings, integrated", None: "no energy path"}
    for g in gpus["devices"]:
        t.add(f"    {t.mark(bool(g['measured']))}  gpu{g['index']}  {g['name']}  "
              f"{g['energy_path'] or '-'}: {paths.get(g['energy_path'], g['energy_path'])}"
              + ("  [MIG on]" if g["mig"] else ""))
        if g["hint"]:
            t.add(f"        {g['hint']}")
    for p in gpus["problems"]:
        t.add(f"    {t.mark(False)}  {p['problem']}")
        if p["hint"]:
            t.add(f"        fix: {p['hint']}")
    if not gpus["devices"] and not gpus["problems"]:
        t.add(f"    {t.mark(None)}  " + ("; ".join(gpus["notes"]) or "no GPU found"))


def _text_estimate(t: Text, est: dict) -> None:
    used = " and ".join(est["used_for"]) or "nothing (every component is measured)"
    t.add(f"  Estimate  used for: {used}")
    t.add(f"    {est['method']}")


def _text_intensity(t: Text, ci: dict) -> None:
    t.add(t.head("Carbon intensity") + "  (what `carbonrun run` would use now)")
    for step in ci["chain"]:
        arrow = "->" if step.get("used") else "  "
        t.add(f"  {arrow} {step['label']:<17} {step['state']}")
    if ci["error"]:
        t.add(f"  {t.mark(False)}  {ci['error']}")
        return
    t.add(f"  {ci['g_per_kwh']:g} g CO2eq/kWh, {ci['region'] or 'no region'}: {ci['how']}")
    for note in ci["notes"]:
        t.add(f"  note: {note}")


def _text_store(t: Text, s: dict) -> None:
    t.add(t.head("Run store"))
    t.add(f"  {t.mark(bool(s['ok']))}  {s['path']}")
    if s["exists"] and not s["error"]:
        rw = "writable" if s["writable"] else "NOT writable"
        t.add(f"      schema {s['schema_version']}, {s['runs']} runs, mode {s['mode']}, {rw}")
    if s["error"]:
        t.add(f"      {s['error']}")
    for note in s["notes"]:
        t.add(f"      {note}")


def render_text(report: Dict[str, Any], color: bool) -> str:
    t = Text(color)
    t.add(t.head("Energy sources"))
    _text_rapl(t, report["rapl"])
    _text_gpus(t, report["gpus"])
    _text_estimate(t, report["estimate"])
    t.add()
    _text_intensity(t, report["intensity"])
    t.add()
    _text_store(t, report["store"])
    t.add()
    if report["measured"]:
        t.add(f"{t.mark(True)}  real energy counters: {', '.join(report['measured'])} (exit 0)")
    else:
        t.add(f"{t.mark(False)}  only estimates are possible here; the fixes above make counters readable (exit 1)")
    return "\n".join(t.lines) + "\n"


@click.command(epilog="Examples:\n\n  carbonrun doctor\n\n  carbonrun doctor --json | jq .measured\n\n"
                      "  carbonrun doctor --region FR --gpus none")
@options("region", "intensity", "intensity_file", "provider", "provider_url", "gpus", "store", "rapl_root",
         "proc_root")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON (structure in docs/usage.md).")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, **params: Any) -> int:
    """Check every energy source, the intensity and the run store; print the fixes.

    Exits 0 when a real counter can be measured (a readable RAPL zone or an NVIDIA GPU), 1 when
    only estimates are possible. Contacts the network only when a live provider is configured.
    """
    from carbonrun import settings

    st = settings.resolve(flag_values(ctx, params))
    for warning in st.warnings:  # a project file's destinations ignored (config.py)
        sys.stderr.write(f"carbonrun: warning: {warning}\n")
    report = diagnose(st)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        from carbonrun.cli.render import color_enabled

        sys.stdout.write(render_text(report, color_enabled(sys.stdout)))
    return report["exit_code"]
