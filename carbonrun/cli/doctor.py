"""`carbonrun doctor`: the checks are carbonrun/doctor.py's; this module renders them and exits with
their exit_code (0: a real counter is available, 1: only estimates)."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

import click

from carbonrun import settings
from carbonrun.cli.render import color_enabled
from carbonrun.cli.run import flag_values, options
from carbonrun.doctor import diagnose, is_meter_zone


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


def _zone_mark(z: Dict[str, Any]) -> Optional[bool]:
    if z["measured"]:
        return True
    return False if is_meter_zone(z["name"]) and not z["readable"] else None


def _text_rapl(t: Text, rapl: Dict[str, Any]) -> None:
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


def _text_group(t: Text, group: Optional[Dict[str, Any]]) -> None:
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


def _text_gpus(t: Text, gpus: Dict[str, Any]) -> None:
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


def _text_estimate(t: Text, est: Dict[str, Any]) -> None:
    used = " and ".join(est["used_for"]) or "nothing (every component is measured)"
    t.add(f"  Estimate  used for: {used}")
    t.add(f"    {est['method']}")


def _text_intensity(t: Text, ci: Dict[str, Any]) -> None:
    t.add(t.head("Carbon intensity") + "  (what `carbonrun run` would use now)")
    for step in ci["chain"]:
        arrow = "->" if step["used"] else "  "
        t.add(f"  {arrow} {step['label']:<17} {step['state']:<11} {step['detail']}")
    if ci["error"]:
        t.add(f"  {t.mark(False)}  {ci['error']}")
        return
    t.add(f"  {ci['g_per_kwh']:g} g CO2eq/kWh, {ci['region'] or 'no region'}: {ci['how']}")
    for note in ci["notes"]:
        t.add(f"  note: {note}")


def _text_store(t: Text, s: Dict[str, Any]) -> None:
    t.add(t.head("Run store"))
    t.add(f"  {t.mark(bool(s['ok']))}  {s['path']}")
    if s["exists"] and not s["error"]:
        facts = [f"schema {s['schema_version']}", f"{s['runs']} runs"]
        if s["mode"] is not None:  # a file; a database has no mode, and says itself when it refuses a write
            facts.append(f"mode {s['mode']}")
        if s["writable"] is not None:
            facts.append("writable" if s["writable"] else "NOT writable")
        t.add("      " + ", ".join(facts))
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
def doctor(ctx: click.Context, /, as_json: bool, **params: Any) -> int:
    """Check every energy source, the intensity and the run store; print the fixes.

    Exits 0 when a real counter can be measured (a readable RAPL zone or an NVIDIA GPU), 1 when
    only estimates are possible. Contacts the network only when a live provider is configured.
    """
    report = diagnose(settings.resolve(flag_values(ctx, params)))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(report, color_enabled(sys.stdout)))
    return int(report["exit_code"])
