"""A run as GitHub-flavoured Markdown, small enough for a CI step summary ($GITHUB_STEP_SUMMARY).

Everything taken from the record goes through `cell`, so a command line with `|`, backticks or HTML
cannot break the table or inject markup into the page.
"""
from __future__ import annotations

from typing import List

from carbonrun.report import units

_ESCAPES = {"\\": "\\\\", "`": "\\`", "|": "\\|", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "#": "\\#",
            "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " "}


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell or a line of prose."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def _command(record: dict, limit: int = 120) -> str:
    cmd = " ".join(record.get("command", []))
    return cell(cmd if len(cmd) <= limit else cmd[:limit - 3] + "...")


def _which(record: dict) -> str:
    return "job" if record.get("attribution") == "process" else "machine"


def figures(record: dict) -> List[str]:
    """The key figures as table rows."""
    e, em = record["energy"], record["emissions"]
    ci, sc = record.get("intensity") or {}, record.get("social_cost_usd") or {}
    rows = [
        f"| Energy | **{units.energy(e['total_kwh'])}** ({units.measured_label(record)}; {_which(record)}"
        f" x PUE {e.get('pue', 1):.2f}; machine {units.energy(e['machine_kwh'])}) |",
        f"| Emissions | **{units.mass(em['kg'])} CO2eq** (range {units.mass(em['low_kg'])} to"
        f" {units.mass(em['high_kg'])}) |",
        f"| Grid intensity | {ci.get('g_per_kwh', 0):.0f} g CO2eq/kWh, {cell(ci.get('region') or 'no region')}"
        f" ({cell(ci.get('source', 'unknown'))}) |",
    ]
    if sc:
        rows.append(f"| Social cost | {units.usd(sc['central'])} ({units.usd(sc['low'])} to {units.usd(sc['high'])})"
                    " |")
    rows.append(f"| Duration | {units.duration(record.get('duration_s') or 0)}, exit {record.get('exit_code')} |")
    return rows


def components(record: dict) -> List[str]:
    rows = ["| Component | Source | Machine | Job | Range |", "|---|---|---:|---:|---|"]
    for c in record.get("components", []):
        src = cell(c["source"]) + (" (estimated)" if c.get("estimated") else "")
        if not c.get("counted", True):
            src += ", not added"
        rng = f"{units.joules(c['low_j'])} to {units.joules(c['high_j'])}" if c.get("estimated") else ""
        rows.append(f"| {cell(c['component'])} {cell(c['device'])} | {src} | {units.joules(c['machine_j'])} |"
                    f" {units.joules(c['job_j'])} | {rng} |")
    return rows


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    rid = f"run #{record['id']}" if record.get("id") is not None else "run"
    out = [f"#### carbonrun {rid}: {cell(record.get('status'))}", "", f"Command: {_command(record)}", "",
           "| | |", "|---|---|", *figures(record), ""]
    if record.get("components"):
        out += [*components(record), ""]
    notes = record.get("notes") or []
    if notes:
        out += ["<details><summary>Notes</summary>", "", *(f"- {cell(n)}" for n in notes), "", "</details>", ""]
    return "\n".join(out)


def render_many(records: List[dict]) -> str:
    out = ["| Run | Started | Status | Duration | Energy | CO2eq | Command |", "|---:|---|---|---:|---:|---:|---|"]
    for r in records:
        out.append(f"| {r.get('id')} | {cell((r.get('started_at') or '')[:19].replace('T', ' '))} |"
                   f" {cell(r.get('status'))} | {units.duration(r.get('duration_s') or 0)} |"
                   f" {units.energy(r['energy']['total_kwh'])} | {units.mass(r['emissions']['kg'])} |"
                   f" {_command(r, 60)} |")
    return "\n".join(out) + "\n"
