"""A run as GitHub-flavoured Markdown, small enough for a CI step summary ($GITHUB_STEP_SUMMARY).

Everything taken from the record goes through `cell`, so a command line with `|`, backticks or HTML
cannot break the table or inject markup into the page.
"""
from __future__ import annotations

from typing import List

from carbonrun.report import units
from carbonrun.units import counts_job
from carbonrun.report.table import component_name
from carbonrun.report.statement import scc_label

_ESCAPES = {"\\": "\\\\", "`": "\\`", "|": "\\|", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]", "#": "\\#",
            "<": "&lt;", ">": "&gt;", "&": "&amp;", "~": "\\~",
            "\n": " ", "\r": " "}


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell or a line of prose."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def _command(record: dict, limit: int = 120) -> str:
    cmd = " ".join(record.get("command", []))
    return cell(cmd if len(cmd) <= limit else cmd[:limit - 3] + "...")


def _which(record: dict) -> str:
    return "job" if counts_job(record.get("attribution")) else "machine"


def figures(record: dict) -> List[str]:
    """The key figures as table rows, at the precision their range allows; estimates marked `~`."""
    e = record.get("energy") or {}
    f = units.figures(record)
    ci, sc = record.get("intensity") or {}, record.get("social_cost_usd") or {}
    d = units.record_digits(record)
    rows = [
        f"| Energy | **{cell(f['energy'])}** ({units.measured_label(record)}; {_which(record)}"
        f" x PUE {units.sig(float(e.get('pue') or 1), 3)}; machine {units.energy(e.get('machine_kwh') or 0, d)}) |",
        f"| Emissions | **{cell(f['emissions'])}** |",
    ]
    if ci.get("g_per_kwh") is not None:
        rows.append(f"| Grid intensity | {units.intensity(ci['g_per_kwh'])} g CO2eq/kWh,"
                    f" {cell(ci.get('region') or 'no region')} ({cell(ci.get('source', 'unknown'))}) |")
    if sc.get("central") is not None:
        rng = "" if sc["central"] < units.SMALLEST_USD else f" ({units.usd(sc['low'])} to {units.usd(sc['high'])})"
        rows.append(f"| Social cost | {cell(units.usd(sc['central']) + rng)}, {cell(scc_label(record))} |")
    emb = record.get("embodied")
    if emb and emb.get("kg") is not None:
        rows.append(f"| Embodied | {cell(units.ESTIMATE)}{units.mass(float(emb['kg']), 2)} CO2eq (manufacturing share,"
                    " not in the emissions above) |")
    rows.append(f"| Duration | {units.duration(record.get('duration_s') or 0)}, exit {record.get('exit_code')} |")
    return rows


def components(record: dict) -> List[str]:
    rows = ["| Component | Source | Machine | Job | Range |", "|---|---|---:|---:|---|"]
    for c in record.get("components", []):
        est = bool(c.get("estimated"))
        src = cell(c["source"]) + (" (estimated)" if est else "")
        if not c.get("counted", True):
            src += ", not added"
        d, mark = (2, cell(units.ESTIMATE)) if est else (4, "")
        rng = units.between(units.joules, c["low_j"], c["high_j"], d) if est and c["high_j"] else ""
        rows.append(f"| {cell(component_name(c))} | {src} |"
                    f" {mark if c['machine_j'] else ''}{units.joules(c['machine_j'], d)} |"
                    f" {mark if c['job_j'] else ''}{units.joules(c['job_j'], d)} | {rng} |")
    return rows


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    rid = f"run #{record['id']}" if record.get("id") is not None else "run"
    out = [f"#### carbonrun {rid}: {cell(record.get('status'))}", "", f"Command: {_command(record)}", ""]
    if units.never_started(record):  # no table of zeros that reads like a measurement
        why = "not found" if record.get("exit_code") == 127 else "not executable"
        out += [f"The command never started ({why}, exit {record.get('exit_code')}); nothing was measured.", ""]
    else:
        out += ["| | |", "|---|---|", *figures(record), ""]
    if record.get("components") and not units.never_started(record):
        out += [*components(record), ""]
    notes = record.get("notes") or []
    if notes:
        out += ["<details><summary>Notes</summary>", "", *(f"- {cell(n)}" for n in notes), "", "</details>", ""]
    return "\n".join(out)


def render_many(records: List[dict]) -> str:
    out = ["| Run | Started | Status | Duration | Energy | CO2eq | Command |", "|---:|---|---|---:|---:|---:|---|"]
    for r in records:
        f = units.figures(r)
        out.append(f"| {r.get('id')} | {cell((r.get('started_at') or '')[:19].replace('T', ' '))} |"
                   f" {cell(r.get('status'))} | {units.duration(r.get('duration_s') or 0)} |"
                   f" {cell(f['mark'])}{f['energy_value']} | {cell(f['mark'])}{f['emissions_value']} |"
                   f" {_command(r, 60)} |")
    if any(units.figures(r)["mark"] for r in records):
        out += ["", f"{cell(units.ESTIMATE)} estimated"]
    return "\n".join(out) + "\n"
