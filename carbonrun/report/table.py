"""The terminal summary of one run (also `report --format table`).

The default summary states each fact once and fits in about a dozen lines; `verbose` (the `report`
command, `run --verbose`) adds the provenance: the whole-machine figure, CPU usage, how the intensity
was chosen, the basis of the social cost and every note in full.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from carbonrun.report import text as tx
from carbonrun.report import units
from carbonrun.units import counts_job
from carbonrun.report.statement import scc_label
from carbonrun.intensity.carbon import equivalent

STATUS_STYLE = {"completed": "green", "failed": "red", "interrupted": "yellow", "incomplete": "yellow",
                "running": "cyan"}


def component_name(c: dict) -> str:
    """"cpu package-0", "gpu 0", "dram-0" (not "dram dram-0"), "cpu" (not "cpu cpu")."""
    comp, dev = str(c.get("component", "")), str(c.get("device", ""))
    return dev if dev.startswith(comp) else f"{comp} {dev}"


def component_rows(record: dict) -> Tuple[List[str], List[List[str]]]:
    """Heads and cells: counted figure first; estimates marked `~` at the precision their range allows."""
    process = counts_job(record.get("attribution"))
    heads = ["component", "job" if process else "machine", "machine" if process else "job (not counted)", "source"]
    rows = []
    comps = record.get("components", [])
    unit = units.energy_unit([float(c.get(k) or 0.0) / units.J_PER_KWH for c in comps
                              for k in ("job_j", "machine_j")], 2)[0]  # one unit for the whole table
    for c in comps:
        mine, other = ("job_j", "machine_j") if process else ("machine_j", "job_j")
        value = float(c.get(mine) or 0.0)
        est = bool(c.get("estimated"))
        d = (units.digits_for(value, c.get("low_j"), c.get("high_j")) if value > 0 else 2) if est else 4
        src = str(c.get("source", "")) + ("" if c.get("counted", True) else " (not added)")
        other_j = float(c.get(other) or 0.0)
        rows.append([tx.printable(component_name(c)), _joules(value, d, est, unit), _joules(other_j, d, est, unit),
                     tx.printable(src)])
    return heads, rows


def _joules(j: float, digits: int, estimated: bool, unit: Optional[str] = None) -> str:
    return (units.ESTIMATE if estimated and j else "") + units.joules(j, digits, unit)


def _intensity(record: dict) -> str:
    ci = record.get("intensity") or {}
    g = ci.get("g_per_kwh")
    if g is None:
        return ""
    where = ci.get("region") or str(ci.get("source") or "").replace("-", " ")
    source = str(ci.get("source") or "")
    if ci.get("region") and source and source != "region" and not source.startswith("table"):
        where += f", {source}"  # a live provider or a file; the built-in table goes without saying
    return f"at {units.intensity(g)} g/kWh ({where})"


def _social_cost(record: dict, verbose: bool) -> Optional[str]:
    sc = record.get("social_cost_usd") or {}
    if sc.get("central") is None:
        return None

    rng = "" if sc["central"] < units.SMALLEST_USD else f" ({units.usd(sc['low'])} to {units.usd(sc['high'])})"
    return f"{units.usd(sc['central'])}{rng}, {scc_label(record)}"


def _equivalent(kg: float) -> Optional[str]:
    """The everyday comparison, when there is one worth reading (a metre of driving or more)."""
    if kg < 0.00025:
        return None

    return equivalent(kg)


# Where the record went (or that it went nowhere) is the point of these notes: never shortened.
_WHOLE = ("the run store", "not stored")


def _first_clause(note: str) -> Optional[str]:
    """The text before the first ": " or "; " outside parentheses (an error quoted in parentheses has its
    own colons), at least 12 characters long; None when there is no such clause."""
    depth = 0
    for i, ch in enumerate(note):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and i >= 12 and ch in ":;" and note[i + 1:i + 2] == " ":
            return note[:i]
    return None


def brief(note: str) -> str:
    """A note's first clause, keeping a short closing fix in parentheses ("(set --region)")."""
    head = None if note.startswith(_WHOLE) else _first_clause(note)
    if head is None:
        return note
    fix = re.search(r"\(([^()]{1,30})\)\s*$", note)
    return f"{head} ({fix.group(1)})" if fix and fix.group(1) not in head else head


def notes(record: dict, verbose: bool) -> List[str]:
    """Notes once each (case and trailing punctuation aside); briefly unless verbose."""
    seen, out = set(), []
    for n in record.get("notes") or []:
        text = tx.printable(" ".join(str(n).split()).rstrip("."))
        short = text if verbose else brief(text)
        if short.lower() not in seen:
            seen.add(short.lower())
            out.append(short)
    return out


def summary_lines(record: dict, *, width: int = 0, color: bool = False, verbose: bool = False) -> List[str]:
    """The key figures, one labelled line each (wrapped at `width`, none when 0)."""
    e = record.get("energy") or {}
    f = units.figures(record)
    which = "job" if counts_job(record.get("attribution")) else "machine"
    est = units.measured_label(record)
    pue = float(e.get("pue") or 1.0)
    how = f"{est}, " + ("the job's share" if which == "job" else "whole machine")
    how += f" x PUE {units.sig(pue, 3)}" if pue != 1 else ""
    if verbose and which == "job":
        machine = units.energy(float(e.get("machine_kwh") or 0), units.record_digits(record))
        how += f"; whole machine {f['mark']}{machine}"  # an estimate like the job's figure
    rows: List[Tuple[str, str]] = [("energy", f"{f['energy']} {how}"),
                                   ("emissions", f"{f['emissions']} {_intensity(record)}".rstrip())]
    cost = _social_cost(record, verbose)
    if cost:
        rows.append(("social cost", cost))
    eq = _equivalent(float((record.get("emissions") or {}).get("kg") or 0.0))
    if eq:
        rows.append(("equivalent", eq))
    if record.get("plan"):  # present only when asked (docs/carbon.md)
        from carbonrun.intensity import planner  # the planner (and its settings) only for a planned run

        rows += [r for r in (planner.summary_line(record),) if r]
    emb = record.get("embodied")
    if emb and emb.get("kg") is not None:
        parts = ", ".join(f"{d.get('kind')}{' ' + str(d['device']) if d.get('kind') == 'gpu' else ''}"
                          f" {units.mass(float(d.get('kg') or 0), 2)}" for d in emb.get("per_device") or [])
        rows.append(("embodied", f"{units.ESTIMATE}{units.mass(float(emb['kg']), 2)} CO2eq"
                                 f"{f' ({parts})' if verbose and parts else ''}; manufacturing share, not in"
                                 " the emissions"))
    if verbose:
        u = record.get("usage") or {}
        rows.append(("usage", f"job CPU {u.get('job_cpu_s', 0):.2f} s of {u.get('machine_busy_cpu_s', 0):.2f} s busy"
                              f" on the machine; peak RSS {u.get('peak_rss_bytes', 0) / 2**20:.0f} MiB;"
                              f" {record.get('samples', 0)} samples every {record.get('interval_s', 0):g} s"))
        ci, sc = record.get("intensity") or {}, record.get("social_cost_usd") or {}
        rows += [(k, v) for k, v in (("intensity", ci.get("how")), ("SCC basis", sc.get("basis"))) if v]
    out: List[str] = []
    for label, text in rows:  # record text (regions, sources, notes) shown, never sent to the terminal
        out += tx.labelled(label, tx.printable(text), width, color)
    return out


def header(record: dict, width: int, color: bool) -> List[str]:
    status = tx.printable(str(record.get("status", "")))
    rid = units.run_label(record)
    cmd = tx.printable(" ".join(" ".join(record.get("command", [])).split()))
    exit_code = record.get("exit_code")
    ended = f" (exit {exit_code})" if exit_code is not None else ""
    head = f"carbonrun {rid} {status}{ended} in {units.duration(record.get('duration_s') or 0)}:"
    limit = 200 if not width else 2 * width - len(head) if width >= 80 else width - 2
    cmd = cmd if len(cmd) <= limit else cmd[:max(limit, 8) - 3] + "..."
    lines = [f"{head} {cmd}"] if not width or len(head) + 1 + len(cmd) <= (width if width < 80 else 2 * width) \
        else [head, f"  {cmd}"]
    lines = [part for line in lines for part in tx.wrap(line, width, 2)]
    lines[0] = lines[0].replace(status, tx.style(status, STATUS_STYLE.get(status), color), 1)
    return lines


def render(record: dict, *, color: bool = False, width: int = 100, verbose: bool = False) -> str:
    """The summary; width 0 writes one line per fact, unwrapped (not a terminal)."""
    lines = header(record, width, color)
    if units.never_started(record):
        why = "not found" if record.get("exit_code") == 127 else "not executable"
        lines += tx.wrap(f"the command never started ({why}); nothing was measured", width, 2)
        return "".join(line + "\n" for line in lines)
    heads, rows = component_rows(record)
    if rows:
        lines += tx.table(heads, rows, width, right=(1, 2), drop=(3, 2), color=color)
    lines += summary_lines(record, width=width, color=color, verbose=verbose)
    found = notes(record, verbose)
    if found:
        if verbose:
            for n in found:
                lines += tx.labelled("note", n, width, color, "yellow")
        else:
            rid = record.get("id")
            more = f" (in full: carbonrun report {rid})" if rid is not None else ""
            lines += tx.labelled("notes", "; ".join(found) + more, width, color, "yellow")
    return "".join(line + "\n" for line in lines)
