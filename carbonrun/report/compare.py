"""Two runs side by side: energy, carbon, duration and each component, with the ratio B/A.

`metrics(a, b)` is the data (also the JSON); the renderers only lay it out, so the table, the JSON
and the Markdown always agree.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional

from carbonrun.report import units


def _counted_j(record: dict) -> Dict[str, float]:
    """Joules per component kind as the run counts them (job or machine, by attribution; psys aside)."""
    key = "job_j" if record.get("attribution") == "process" else "machine_j"
    out: Dict[str, float] = {}
    for c in record.get("components", []):
        if c.get("counted", True):
            out[c["component"]] = out.get(c["component"], 0.0) + float(c.get(key) or 0.0)
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or a == 0:
        return None
    return b / a


def metrics(a: dict, b: dict) -> List[dict]:
    """Rows {name, unit, a, b, ratio}; a component one run lacks is 0 there."""
    def row(name: str, unit: str, va: Optional[float], vb: Optional[float]) -> dict:
        return {"name": name, "unit": unit, "a": va, "b": vb, "ratio": _ratio(va, vb)}

    ea, eb = a.get("energy", {}), b.get("energy", {})
    rows = [
        row("duration", "s", a.get("duration_s"), b.get("duration_s")),
        row("energy", "kWh", ea.get("total_kwh"), eb.get("total_kwh")),
        row("machine energy", "kWh", ea.get("machine_kwh"), eb.get("machine_kwh")),
        row("emissions", "kg CO2eq", a.get("emissions", {}).get("kg"), b.get("emissions", {}).get("kg")),
        row("intensity", "g CO2eq/kWh", a.get("intensity", {}).get("g_per_kwh"),
            b.get("intensity", {}).get("g_per_kwh")),
    ]
    ca, cb = _counted_j(a), _counted_j(b)
    for comp in sorted(set(ca) | set(cb)):
        rows.append(row(f"{comp} energy", "kWh", ca.get(comp, 0.0) / 3.6e6, cb.get(comp, 0.0) / 3.6e6))
    return rows


def _human(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "kWh":
        return units.energy(value)
    if unit == "kg CO2eq":
        return units.mass(value)
    if unit == "s":
        return units.duration(value)
    return f"{value:.0f} g/kWh"


def _ratio_text(r: Optional[float]) -> str:
    if r is None:
        return "n/a"
    return f"{r:.3f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:,.0f}x"


def _label(record: dict) -> str:
    cmd = " ".join(" ".join(record.get("command", [])).split())
    return f"#{record.get('id')} {record.get('status', '')}: {cmd[:60]}{'...' if len(cmd) > 60 else ''}"


def render_json(a: dict, b: dict) -> str:
    doc = {"a": {"id": a.get("id"), "uuid": a.get("uuid"), "command": a.get("command")},
           "b": {"id": b.get("id"), "uuid": b.get("uuid"), "command": b.get("command")},
           "metrics": metrics(a, b)}
    return json.dumps(doc, indent=2) + "\n"


def render_markdown(a: dict, b: dict) -> str:
    from carbonrun.report.markdown import cell

    lines = [f"**A** {cell(_label(a))}  ", f"**B** {cell(_label(b))}", "",
             "| | A | B | B/A |", "|---|---:|---:|---:|"]
    for m in metrics(a, b):
        lines.append(f"| {m['name']} | {_human(m['a'], m['unit'])} | {_human(m['b'], m['unit'])} |"
                     f" {_ratio_text(m['ratio'])} |")
    return "\n".join(lines) + "\n"


def render_table(a: dict, b: dict, *, color: bool = False, width: int = 100) -> str:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from carbonrun.report.table import _console

    con = _console(color, width)
    con.print(f"[bold]A[/] {escape(_label(a))}")
    con.print(f"[bold]B[/] {escape(_label(b))}")
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, just in (("", "left"), ("A", "right"), ("B", "right"), ("B/A", "right")):
        t.add_column(name, justify=just)
    for m in metrics(a, b):
        r = m["ratio"]
        style = "" if r is None or abs(r - 1) < 0.05 or m["name"] == "intensity" else ("red" if r > 1 else "green")
        ratio = _ratio_text(r)
        t.add_row(m["name"], _human(m["a"], m["unit"]), _human(m["b"], m["unit"]),
                  f"[{style}]{ratio}[/]" if style else ratio)
    con.print(t)
    return con.file.getvalue()
