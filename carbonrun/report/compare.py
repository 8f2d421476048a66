"""Two runs side by side: energy, carbon, duration and each component, with the ratio B/A.

`metrics(a, b)` is the data (also the JSON); the renderers only lay it out, so the table, the JSON
and the Markdown always agree.
"""
from __future__ import annotations

import json
from typing import Callable, List, Optional, Tuple

from carbonrun.report import text as tx, units
from carbonrun.units import kwh
from carbonrun.report.markdown import cell


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
    ca, cb = units.counted_j_by_kind(a), units.counted_j_by_kind(b)
    for comp in sorted(set(ca) | set(cb)):
        rows.append(row(f"{comp} energy", "kWh", kwh(ca.get(comp, 0.0)), kwh(cb.get(comp, 0.0))))
    return rows


def _digits(record: dict, name: str) -> int:
    """Counters keep four significant digits; an estimated run's energy and emissions two."""
    if name == "duration" or name == "intensity":
        return 4
    return units.record_digits(record) if units.is_estimated(record) else 4


def cells(m: dict, a: dict, b: dict) -> Tuple[str, str]:
    """The A and B cells of one row, in one unit so they read side by side; estimates marked `~`."""
    unit, va, vb = m["unit"], m["a"], m["b"]
    da, db = _digits(a, m["name"]), _digits(b, m["name"])
    known = [v for v in (va, vb) if v is not None]
    fmt: Callable[[float, int], str]
    if unit == "kWh":
        u = units.energy_unit(known, min(da, db))[0]
        fmt = lambda v, d: units.energy(v, d, u)  # noqa: E731
    elif unit == "kg CO2eq":
        u = units.mass_unit(known, min(da, db))[0]
        fmt = lambda v, d: units.mass(v, d, u)  # noqa: E731
    elif unit == "s":
        fmt = lambda v, d: units.duration(v)  # noqa: E731
    else:
        fmt = lambda v, d: f"{units.intensity(v)} g/kWh"  # noqa: E731

    def one(v: Optional[float], d: int, r: dict) -> str:
        if v is None:
            return "n/a"
        mark = units.ESTIMATE if unit in ("kWh", "kg CO2eq") and units.is_estimated(r) and v else ""
        return mark + fmt(v, d)

    return one(va, da, a), one(vb, db, b)


def _legend(a: dict, b: dict) -> List[str]:
    return [f"{units.ESTIMATE} estimated"] if units.is_estimated(a) or units.is_estimated(b) else []


def _ratio_text(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{units.sig(r, 3)}x"


def _label(record: dict) -> str:
    cmd = " ".join(" ".join(record.get("command", [])).split()) or "''"  # an empty command name is shown
    status = "not started" if units.never_started(record) else record.get("status", "")  # as history says
    return f"#{record.get('id')} {status}: {cmd[:60]}{'...' if len(cmd) > 60 else ''}"


def render_json(a: dict, b: dict) -> str:
    doc = {"a": {"id": a.get("id"), "uuid": a.get("uuid"), "command": a.get("command")},
           "b": {"id": b.get("id"), "uuid": b.get("uuid"), "command": b.get("command")},
           "metrics": metrics(a, b)}
    return json.dumps(doc, indent=2) + "\n"


def render_markdown(a: dict, b: dict) -> str:
    lines = [f"**A** {cell(_label(a))}  ", f"**B** {cell(_label(b))}", "",
             "| | A | B | B/A |", "|---|---:|---:|---:|"]
    for m in metrics(a, b):
        ca, cb = cells(m, a, b)
        lines.append(f"| {m['name']} | {cell(ca)} | {cell(cb)} | {_ratio_text(m['ratio'])} |")
    lines += ["", *(cell(x) for x in _legend(a, b))] if _legend(a, b) else []
    return "\n".join(lines) + "\n"


def render_table(a: dict, b: dict, *, color: bool = False, width: int = 100) -> str:
    lines = [tx.style("A", "bold", color) + " " + tx.printable(_label(a)),
             tx.style("B", "bold", color) + " " + tx.printable(_label(b))]
    rows = []
    for m in metrics(a, b):
        r = m["ratio"]
        ca, cb = cells(m, a, b)
        rows.append([m["name"], ca, cb, _ratio_text(r)])
    body = tx.table(["", "A", "B", "B/A"], rows, width, right=(1, 2, 3), color=color)
    for i, m in enumerate(metrics(a, b), start=1):
        r = m["ratio"]
        if color and r is not None and abs(r - 1) >= 0.05 and m["name"] != "intensity":
            ratio = _ratio_text(r)
            body[i] = body[i][: len(body[i]) - len(ratio)] + tx.style(ratio, "red" if r > 1 else "green", color)
    return "\n".join(lines + body + _legend(a, b)) + "\n"
