"""The terminal summary of one run (also `report --format table`)."""
from __future__ import annotations

import io
from typing import List

from carbonrun.report import units

STATUS_STYLE = {"completed": "green", "failed": "red", "interrupted": "yellow", "incomplete": "yellow",
                "running": "cyan"}


def _console(color: bool, width: int):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, color_system="standard" if color else None,
                   force_terminal=color, no_color=not color, highlight=False, emoji=False)


def components_table(record: dict):
    from rich.table import Table
    from rich import box

    job_col = "job" if record.get("attribution") == "process" else "job (not counted)"
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, just in (("component", "left"), ("device", "left"), ("source", "left"), ("machine", "right"),
                       (job_col, "right"), ("range", "right")):
        t.add_column(name, justify=just)
    for c in record.get("components", []):
        src = c["source"] + (" (estimated)" if c.get("estimated") else "")
        if not c.get("counted", True):
            src += ", not added"
        rng = "" if not c.get("estimated") else f"{units.joules(c['low_j'])} to {units.joules(c['high_j'])}"
        t.add_row(c["component"], c["device"], src, units.joules(c["machine_j"]), units.joules(c["job_j"]), rng)
    return t


def summary_lines(record: dict) -> List[str]:
    """Key figures, one per line; provenance dimmed underneath."""
    from rich.markup import escape

    e, em, ci = record["energy"], record["emissions"], record.get("intensity", {})
    sc = record.get("social_cost_usd", {})
    which = "job" if record.get("attribution") == "process" else "machine"
    lines = [
        f"[bold]energy     [/] {units.energy(e['total_kwh'])} {units.measured_label(record)}"
        f" [dim]({which} {units.energy(e[which + '_kwh'])} x PUE {e['pue']:.2f};"
        f" whole machine {units.energy(e['machine_kwh'])})[/]",
        f"[bold]intensity  [/] {ci.get('g_per_kwh', 0):.0f} g CO2eq/kWh, {escape(str(ci.get('region') or 'no region'))}"
        f" [dim]({ci.get('source', '?')})[/]",
        f"[bold]emissions  [/] {units.mass(em['kg'])} CO2eq [dim](range {units.mass(em['low_kg'])}"
        f" to {units.mass(em['high_kg'])})[/]",
    ]
    if sc:
        lines.append(f"[bold]social cost[/] {units.usd(sc['central'])} [dim]({units.usd(sc['low'])} to"
                     f" {units.usd(sc['high'])})[/]")
    from carbonrun.intensity.carbon import equivalent

    lines.append(f"[bold]equivalent [/] {equivalent(em['kg'])}")
    u = record.get("usage", {})
    lines.append(f"[dim]job CPU {u.get('job_cpu_s', 0):.2f} s of {u.get('machine_busy_cpu_s', 0):.2f} s busy on"
                 f" the machine; peak RSS {u.get('peak_rss_bytes', 0) / 2**20:.0f} MiB;"
                 f" {record.get('samples', 0)} samples[/]")
    if record.get("plan") or record.get("embodied"):  # sections present only when asked (docs/carbon.md)
        from carbonrun.accounting import embodied
        from carbonrun.intensity import planner

        lines += [f"[bold]{k:<11}[/] {escape(v)}" for k, v in filter(None, (planner.summary_line(record),
                                                                             embodied.summary_line(record)))]
    for label, text in (("intensity", ci.get("how")), ("social cost", sc.get("basis"))):
        if text:
            lines.append(f"[dim]{label}: {escape(text)}[/]")
    return lines


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    from rich.markup import escape

    con = _console(color, width)
    status = record["status"]
    rid = f"run #{record['id']}" if record.get("id") is not None else "run (not stored)"
    con.print(f"[bold]carbonrun[/] {rid} [{STATUS_STYLE.get(status, 'white')}]{status}[/]"
              f" (exit {record.get('exit_code')}) in {units.duration(record.get('duration_s', 0))}:"
              f" {escape(' '.join(record.get('command', [])))[:width * 2]}")
    con.print(components_table(record))
    for line in summary_lines(record):
        con.print(line)
    for note in record.get("notes", []):
        con.print(f"[yellow]note:[/] {escape(note)}")
    return con.file.getvalue()
