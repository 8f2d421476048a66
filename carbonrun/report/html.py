"""A run as one self-contained HTML page: inline CSS and an inline SVG chart, nothing fetched.

The page must open offline years later (attached to a paper, a CI artefact), so there is no CDN, font
or script. Every string from the record passes through `esc`: command lines, tags, notes and paths
are the user's, and a report must never execute what it describes.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from carbonrun.report import statement as st, units
from carbonrun.report.statement import is_epa, region_name, scc_label
from carbonrun.units import counted_key, counts_job
from carbonrun.intensity.carbon import equivalent

COLORS = {"cpu": "#2563eb", "gpu": "#16a34a", "dram": "#9333ea", "ram": "#d97706", "psys": "#64748b"}
_FALLBACK = ["#0891b2", "#db2777", "#65a30d", "#ea580c"]
STATUS_CLASS = {"completed": "ok", "failed": "bad", "interrupted": "warn", "incomplete": "warn", "running": "info"}

CSS = """
:root{--fg:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#0f766e}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
 "Helvetica Neue",Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:32px 28px 48px}
header{display:flex;align-items:baseline;gap:14px;flex-wrap:wrap}
h1{font-size:24px;margin:0;font-weight:650;letter-spacing:-.01em}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);margin:0 0 12px;font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:13.5px}
.cmd{display:block;margin:12px 0 6px;padding:10px 14px;background:#0f172a;color:#e2e8f0;border-radius:8px;
 white-space:pre-wrap;word-break:break-all}
.meta{color:var(--muted);font-size:13.5px}
.meta span+span:before{content:"\\00b7";margin:0 8px;color:#cbd5e1}
.badge{display:inline-block;padding:1px 10px;border-radius:999px;font-size:12.5px;font-weight:600;
 text-transform:uppercase;letter-spacing:.04em}
.ok{background:#dcfce7;color:#166534}.bad{background:#fee2e2;color:#991b1b}.warn{background:#fef3c7;color:#92400e}
.info{background:#e0f2fe;color:#075985}
.tag{display:inline-block;margin:2px 6px 2px 0;padding:0 8px;border:1px solid var(--line);border-radius:6px;
 background:var(--card);font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:14px;margin:22px 0}
.card,section{background:var(--card);border:1px solid var(--line);border-radius:10px}
.card{padding:14px 16px}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.06em}
.card .v{font-size:24px;font-weight:650;margin:2px 0;letter-spacing:-.01em}
.card .s{font-size:12.5px;color:var(--muted)}
.card small{font-size:15px;font-weight:500;color:#334155}
section{padding:18px 20px;margin:14px 0}
.two{display:grid;grid-template-columns:1fr 1fr;gap:14px}.two section{margin:0}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12.5px;border-bottom:1px solid var(--line);
 padding:6px 10px}
td{padding:7px 10px;border-bottom:1px solid #f1f5f9;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.dot{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:8px;vertical-align:-1px}
.bar{height:6px;background:#f1f5f9;border-radius:3px;min-width:80px}.bar i{display:block;height:6px;border-radius:3px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 18px;margin:0;font-size:14px}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
blockquote{margin:0;padding:4px 0 4px 16px;border-left:3px solid var(--accent);font-size:16px}
.method{color:var(--muted);font-size:13px;margin:10px 0 0}
ul.notes{margin:0;padding-left:20px}ul.notes li{margin:4px 0}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
footer{color:var(--muted);font-size:12.5px;margin-top:22px}
.share{display:flex;align-items:center;gap:8px}.share .bar{flex:1}.share b{font-weight:600;font-size:13px;
 min-width:3.2em;text-align:right;font-variant-numeric:tabular-nums}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;margin:0 0 6px;font-size:13px;color:#334155}
.legend i{display:inline-block;width:14px;height:4px;border-radius:2px;margin-right:6px;vertical-align:middle}
.legend i.est{background:repeating-linear-gradient(90deg,currentColor 0 5px,transparent 5px 8px)!important}
.est-note{color:#92400e;font-size:13px;margin:0 0 6px}
@media (max-width:800px){main{padding:18px 14px 32px}.cards{grid-template-columns:1fr 1fr}
 .two{grid-template-columns:1fr}.card .v{font-size:21px}th,td{padding:5px 6px}.hide-narrow{display:none}}
@page{size:A4;margin:12mm}
@media print{body{background:#fff;font-size:9pt;line-height:1.35}main{max-width:none;padding:0}h1{font-size:14pt}
 .cmd{background:#f1f5f9;color:#0f172a;border:1px solid var(--line);margin:5px 0 3px;padding:4px 8px;font-size:8.5pt}
 .meta,code{font-size:8.5pt}.cards{grid-template-columns:repeat(4,1fr);gap:5px;margin:6px 0}.card{padding:5px 8px}
 .card .k,.card .s{font-size:7.5pt}.card .v{font-size:13pt}.card small{font-size:9pt}
 section{padding:5px 9px;margin:4px 0;break-inside:avoid;border-radius:6px}.two{grid-template-columns:1fr 1fr;gap:5px}
 h2{font-size:7.5pt;margin:0 0 3px}svg{max-height:32mm}.est-note{display:none}.badge{padding:0 6px;font-size:7pt}
 .legend{font-size:8pt;margin:0 0 2px}
 table{font-size:8.5pt}td,th{padding:2px 6px}.hide-narrow{display:table-cell}dl{gap:1px 10px;font-size:8.5pt}
 blockquote{font-size:9.5pt}.method{font-size:7.5pt;margin-top:3px;line-height:1.3}ul.notes li{margin:0}
 .notes{font-size:7.5pt;line-height:1.3}
 footer{margin-top:4px;font-size:7.5pt}}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def color_of(component: str, i: int) -> str:
    return COLORS.get(component, _FALLBACK[i % len(_FALLBACK)])


# -- chart ---------------------------------------------------------------------------------------------
def nice_ticks(hi: float, n: int = 5) -> List[float]:
    """0 and round steps (1, 2, 2.5, 5 x 10^k) up to at least `hi`: axis labels people can read."""
    if hi <= 0 or not math.isfinite(hi):
        return [0.0, 1.0]
    raw = hi / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


def time_unit(span: float) -> Tuple[float, str]:
    """Seconds for short runs, minutes up to two hours, then hours: one unit for ticks and labels."""
    return (3600.0, "h") if span > 7200 else (60.0, "min") if span > 120 else (1.0, "s")


def _step_path(t: Sequence[float], w: Sequence[float], sx: Callable[[float], float],
               sy: Callable[[float], float]) -> str:
    """Average power per bucket drawn as steps: each bucket is flat from its start to its end."""
    parts: List[str] = []
    prev = 0.0
    for end, watts in zip(t, w):
        y = sy(watts)
        parts.append(f"{'M' if not parts else 'L'}{sx(prev):.1f},{y:.1f}H{sx(end):.1f}")
        prev = end
    return "".join(parts)


@dataclass
class _Frame:
    """The plot area inside the SVG and the scales that map seconds and watts onto it."""

    width: int
    height: int
    xmax: float
    ymax: float
    left: int = 64
    right: int = 36
    top: int = 16
    bottom: int = 46

    def x(self, seconds: float) -> float:
        return self.left + (self.width - self.left - self.right) * seconds / self.xmax

    def y(self, watts: float) -> float:
        return self.top + (self.height - self.top - self.bottom) * (1 - watts / self.ymax)


def _axes(f: _Frame, yt: Sequence[float], xt: Sequence[float], unit: Tuple[float, str]) -> str:
    base, mid_y = f.height - f.bottom, (f.top + f.height - f.bottom) / 2
    out = [f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{f.y(y):.1f}" y2="{f.y(y):.1f}" stroke="#e2e8f0"/>'
           f'<text x="{f.left - 8}" y="{f.y(y) + 4:.1f}" text-anchor="end" font-size="12" fill="#64748b">{y:g}</text>'
           for y in yt]
    out += [f'<line x1="{f.x(x):.1f}" x2="{f.x(x):.1f}" y1="{base}" y2="{base + 5}" stroke="#94a3b8"/>'
            f'<text x="{f.x(x):.1f}" y="{base + 19}" text-anchor="middle" font-size="12" fill="#64748b">'
            f'{x / unit[0]:g} {unit[1]}</text>' for x in xt]
    out.append(f'<line x1="{f.left}" x2="{f.width - f.right}" y1="{base}" y2="{base}" stroke="#94a3b8"/>'
               f'<text x="{(f.left + f.width - f.right) / 2:.0f}" y="{f.height - 6}" text-anchor="middle"'
               f' font-size="12.5" fill="#475569">time since start</text>'
               f'<text x="14" y="{mid_y:.0f}" transform="rotate(-90 14 {mid_y:.0f})" text-anchor="middle"'
               f' font-size="12.5" fill="#475569">power (W)</text>')
    return "".join(out)


def series_colors(names: Sequence[str]) -> Dict[str, str]:
    """A colour per series: the component's own for its first device, distinct ones for the rest."""
    out: Dict[str, str] = {}
    spare = iter(_FALLBACK * 4)
    for name in names:
        kind = name.split(" ", 1)[0]
        out[name] = COLORS[kind] if kind in COLORS and COLORS[kind] not in out.values() else next(spare)
    return out


def _lines(f: _Frame, t: Sequence[float], series: Dict[str, List[float]], colors: Dict[str, str],
           estimated: Sequence[str]) -> str:
    """One step line per device; psys and estimated series dashed (an estimate is not a reading)."""
    out, stroke = [], 2 if len(t) < 400 else 1.25  # dense lines stay readable
    for name, watts in series.items():
        dash = ' stroke-dasharray="6 4"' if name.split(" ", 1)[0] in estimated or name == "psys" else ""
        out.append(f'<path d="{_step_path(t, watts, f.x, f.y)}" fill="none" stroke="{colors[name]}"'
                   f' stroke-width="{stroke}" stroke-linejoin="round"{dash}><title>{esc(name)}</title></path>')
    return "".join(out)


def _legend(t: Sequence[float], series: Dict[str, List[float]], colors: Dict[str, str],
            estimated: Sequence[str]) -> str:
    """Each device with its mean power over the run; estimated ones say so."""
    widths = [b - a for a, b in zip([0.0, *t[:-1]], t)]
    span = max(t[-1], 1e-9)
    items = []
    for name, watts in series.items():
        est = name.split(" ", 1)[0] in estimated
        mean = sum(w * d for w, d in zip(watts, widths)) / span
        items.append(f'<span><i class="{"est" if est else ""}" style="background:{colors[name]};color:{colors[name]}">'
                     f'</i>{esc(name)}  mean {"~" if est else ""}{mean:.1f} W{" (estimated)" if est else ""}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def power_chart(timeline: dict, width: int = 720, height: int = 300, estimated: Sequence[str] = ()) -> str:
    """Average power per device over the run: an inline SVG (the timeline's buckets as steps) and its legend.

    720 units wide so the text keeps its size on a 700-pixel screen; `estimated` names the components
    whose power is an estimate: their lines are dashed and the legend says so."""
    t = list(timeline.get("t") or [])
    series = {c: list(v) for c, v in (timeline.get("watts") or {}).items() if v and len(v) == len(t)}
    if not t or not series:
        return '<p class="meta">No power timeline was recorded (the run ended before the first sample).</p>'
    span = max(t[-1], 1e-9)
    peak = max(max(v) for v in series.values())
    yt = nice_ticks(peak * 1.05 if peak > 0 else 1.0, 5)
    unit = time_unit(span)
    xt = [x * unit[0] for x in nice_ticks(span / unit[0], 6) if x * unit[0] <= span * 1.001]  # axis ends with the run
    f = _Frame(width, height, span, yt[-1])
    colors = series_colors(list(series))
    note = ('<p class="est-note">Dashed lines are estimates (no hardware counter): the power follows the'
            ' model, not a reading.</p>' if any(n.split(" ", 1)[0] in estimated for n in series) else "")
    label = "power over time per device" + (" (partly estimated)" if note else "")
    return (f'{_legend(t, series, colors, estimated)}{note}<svg viewBox="0 0 {width} {height}" width="100%"'
            f' role="img" aria-label="{label}"><title>Power over time per device (W)</title>'
            f'{_axes(f, yt, xt, unit)}{_lines(f, t, series, colors, estimated)}</svg>')


# -- sections ------------------------------------------------------------------------------------------
def _card(key: str, value: str, sub: str) -> str:
    """A key figure; the unit after the number is set smaller so big figures fit one line."""
    number, _, unit = value.partition(" ") if not value.startswith("<") else (value, "", "")
    return (f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{esc(number)}'
            f'{f" <small>{esc(unit)}</small>" if unit else ""}</div><div class="s">{esc(sub)}</div></div>')


def _when(iso_time: object) -> str:
    """2024-05-01T12:00:00.123+02:00 -> 2024-05-01 12:00:00 +02:00 (what a reader scans for)."""
    text = str(iso_time or "")
    if len(text) < 19 or text[10] != "T":
        return text
    offset = text[23:] if len(text) > 23 and text[19] == "." else text[19:]
    return f"{text[:10]} {text[11:19]} {offset}".strip()


def _place(key: object) -> str:
    """The table's name for a region key ("DE" -> "Germany"), else the key as recorded."""
    try:
        return region_name(str(key)) or str(key)
    except ImportError:
        return str(key)


def _region_name(key: object) -> str:
    """'Germany (DE)' for a table key; 'none' when the run had no region."""
    if not key:
        return "none"
    name = _place(key)
    return f"{name} ({key})" if name != key else str(key)


def _region(ci: dict) -> str:
    source = str(ci.get("source", ""))
    if not ci.get("region"):
        return source.replace("-", " ")
    table = source in ("", "region") or source.startswith("table")  # the built-in table goes without saying
    return _place(ci["region"]) + ("" if table else f", {source}")


def cards(r: dict) -> str:
    e, ci, sc = r.get("energy", {}), r.get("intensity") or {}, r.get("social_cost_usd") or {}
    which = "job" if counts_job(r.get("attribution")) else "machine"
    f, d = units.figures(r), units.record_digits(r)
    kwh, lo, hi = units.energy_bounds(r)
    kg, kg_lo, kg_hi = units.mass_bounds(r)
    est = units.is_estimated(r)
    rng = f"; range {units.between(units.energy, lo, hi, d)}" if est and hi > lo else ""
    kg_rng = (f"range {units.between(units.mass, kg_lo, kg_hi, d)}" if est and kg_hi > kg_lo
              else "nothing measured" if units.measured_label(r) == "unmeasured" else "exact counters")
    g = ci.get("g_per_kwh")
    out = [_card("Energy", f["mark"] + f["energy_value"],
                 f"{units.measured_label(r)}; {which} x PUE {units.sig(float(e.get('pue') or 1), 3)}{rng}"),
           _card("Emissions", f"{f['mark']}{f['emissions_value']} CO2eq", kg_rng),
           _card("Grid intensity", f"{units.intensity(g)} g/kWh" if g is not None else "n/a", _region(ci)),
           _card("Social cost", units.usd(sc["central"]) if sc else "n/a",
                 (f"range {units.usd(sc['low'])} to {units.usd(sc['high'])}; " if sc and sc["central"] >= 1e-6
                  else "") + (scc_label(r) if sc else ""))]  # whose SCC: US EPA's or the user's --scc
    return f'<div class="cards">{"".join(out)}</div>'


def components(r: dict) -> str:
    comps = r.get("components") or []
    if not comps:
        return '<p class="meta">No energy meter was available for this run.</p>'
    key = counted_key(r.get("attribution"))
    total = sum(c.get(key, 0) for c in comps if c.get("counted", True)) or 1.0
    unit = units.energy_unit([float(c.get(k) or 0) / units.J_PER_KWH for c in comps for k in ("job_j", "machine_j")],
                             2)[0]  # one unit for the table, so the rows compare at a glance
    rows = []
    for i, c in enumerate(comps):
        est = bool(c.get("estimated"))
        kind = "estimated" if est else "measured"
        counted = c.get("counted", True)
        share = c.get(key, 0) / total if counted else 0.0
        d, mark = (2, "~") if est else (4, "")
        rng = (units.between(units.joules, c.get("low_j", 0), c.get("high_j", 0), d, unit) if est and c.get("high_j")
               else "" if est else "exact counter")
        pct = f"{share * 100:.0f}%" if counted else "-"
        dev = str(c.get("device") or "")
        device = "" if dev in ("", c["component"]) else f' <span class="meta">{esc(dev)}</span>'
        machine_j, job_j = (f"{mark if c.get(k) else ''}{units.joules(float(c.get(k) or 0.0), d, unit)}"
                            for k in ("machine_j", "job_j"))
        rows.append(
            f'<tr><td><span class="dot" style="background:{color_of(c["component"], i)}"></span>'
            f'<b>{esc(c["component"])}</b>{device}</td>'
            f'<td>{esc(c.get("source"))} <span class="badge {"warn" if est else "ok"}">{kind}</span>'
            f'{"" if counted else " <span class=meta>(not added: covers the others)</span>"}</td>'
            f'<td class="n hide-narrow">{machine_j}</td><td class="n">{job_j}</td>'
            f'<td class="n hide-narrow">{esc(rng)}</td><td><div class="share"><div class="bar"><i style="width:'
            f'{share * 100:.1f}%;background:{color_of(c["component"], i)}"></i></div><b>{pct}</b></div></td></tr>')
    head = ('<tr><th>Component</th><th>Source</th><th class="n hide-narrow">Machine</th><th class="n">Job</th>'
            '<th class="n hide-narrow">Range</th><th>Share of total</th></tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def _dl(items: Sequence[Tuple[str, object]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v not in (None, "")) + "</dl>"


def carbon(r: dict) -> str:
    ci, sc = r.get("intensity") or {}, r.get("social_cost_usd") or {}
    e = r.get("energy") or {}
    f = units.figures(r)
    g = ci.get("g_per_kwh")
    intensity = _dl([("Intensity", (f"{units.intensity(g)} g CO2eq/kWh" if g is not None else "not recorded") +
                      (" (time-varying, energy-weighted mean)" if ci.get("time_varying") else "")),
                     ("Region", _region_name(ci.get("region"))), ("Source", ci.get("source")), ("How", ci.get("how")),
                     ("PUE", units.sig(float(e.get("pue") or 1), 3))])
    cost = None
    if sc.get("central") is not None:
        cost = units.usd(sc["central"]) + (f" (range {units.usd(sc['low'])} to {units.usd(sc['high'])})"
                                           if sc["central"] >= 1e-6 else "")
    money = _dl([("Emissions", f["emissions"]),
                 ("Equivalent", equivalent(float((r.get("emissions") or {}).get("kg") or 0))),
                 ("Social cost", cost),
                 ("Basis", "US EPA global social cost of carbon, $190/t central (footnote below)" if is_epa(r)
                  else sc.get("basis"))])
    return (f'<div class="two"><section><h2>Grid intensity</h2>{intensity}</section>'
            f'<section><h2>Emissions and social cost</h2>{money}</section></div>')


def embodied(r: dict) -> str:
    """The manufacturing share, beside (never in) the emissions; only when the run asked for it."""
    emb = r.get("embodied")
    if not emb:
        return ""
    rows = "".join(f'<tr><td>{esc(d.get("kind"))} <span class="meta">{esc(d.get("device"))}</span></td>'
                   f'<td class="n">~{units.mass(float(d.get("kg") or 0), 2)}</td>'
                   f'<td>{esc(d.get("share_how"))}</td></tr>' for d in emb.get("per_device") or [])
    table = (f'<table><tr><th>Device</th><th class="n">CO2eq</th><th>Share</th></tr>{rows}</table>'
             if rows else "")
    facts = _dl([("Embodied", "~" + units.mass(float(emb.get("kg") or 0), 2) + " CO2eq"),
                 ("Method", emb.get("method")), ("Basis", emb.get("basis"))])
    extra = "".join(f"<p class=method>{esc(n)}</p>" for n in emb.get("notes") or [])
    return (f'<section><h2>Embodied carbon (manufacturing share, not in the emissions above)</h2>'
            f'{facts}{table}{extra}</section>')


def statement(r: dict) -> str:
    """The Henderson et al. (2020) statement (report/statement.py) with its footnote."""
    f = st.facts(r)
    return (f'<section><h2>Carbon impact statement</h2><blockquote>{esc(st.sentence(f))}</blockquote>'
            f'<p class="method">{esc(st.method(f))}</p></section>')


def host(r: dict) -> str:
    h, u = r.get("host") or {}, r.get("usage") or {}
    gpus = ", ".join(f"{g.get('index')}: {g.get('name')}" for g in h.get("gpus") or []) or "none"
    machine = _dl([("Host", h.get("name")), ("Platform", h.get("platform")), ("CPU", h.get("cpu_model")),
                   ("Threads", h.get("cpu_threads")),
                   ("Memory", f"{h['memory_gb']:g} GB" if h.get("memory_gb") else None), ("GPUs", gpus),
                   ("Virtualised", "yes" if h.get("virtualised") else "no")])
    usage = _dl([("Attribution", r.get("attribution")), ("Job CPU time", f"{u.get('job_cpu_s', 0):.2f} s"),
                 ("Machine busy CPU", f"{u.get('machine_busy_cpu_s', 0):.2f} s"),
                 ("Peak RSS", f"{u.get('peak_rss_bytes', 0) / 2**20:.0f} MiB"),
                 ("Samples", f"{r.get('samples', 0)} every {r.get('interval_s', 0):g} s"),
                 ("Working directory", r.get("cwd"))])
    return (f'<div class="two"><section><h2>Host</h2>{machine}</section>'
            f'<section><h2>Usage</h2>{usage}</section></div>')


def header(r: dict) -> str:
    status = r.get("status", "")
    rid = f"Run #{r['id']}" if r.get("id") is not None else "Run"
    tags = "".join(f'<span class="tag">{esc(k)}={esc(v)}</span>' for k, v in (r.get("tags") or {}).items())
    meta = [f"started {_when(r.get('started_at'))}", f"duration {units.duration(r.get('duration_s') or 0)}",
            f"exit code {r.get('exit_code')}"]
    return (f'<header><h1>{esc(rid)}</h1><span class="badge {STATUS_CLASS.get(status, "info")}">{esc(status)}</span>'
            f'</header><code class="cmd">{esc(" ".join(r.get("command", [])))}</code>'
            f'<div class="meta">{"".join(f"<span>{esc(m)}</span>" for m in meta)}</div>'
            f'{f"<div style=margin-top:8px>{tags}</div>" if tags else ""}')


def notes(r: dict) -> str:
    items = r.get("notes") or []
    if not items:
        return ""
    lis = "".join(f"<li>{esc(n)}</li>" for n in items)
    return f'<section><h2>Notes</h2><ul class="notes">{lis}</ul></section>'


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    r = record
    title = f"carbonrun run #{r.get('id')}: {' '.join(r.get('command', []))[:80]}"
    estimated = sorted({str(c.get("component")) for c in r.get("components") or [] if c.get("estimated")})
    chart = power_chart(r.get("timeline") or {}, estimated=estimated)
    body = [header(r), cards(r),
            f'<section><h2>Power over time (whole machine, per device)</h2>{chart}</section>',
            f"<section><h2>Energy per component</h2>{components(r)}</section>",
            carbon(r), embodied(r), statement(r), host(r), notes(r),
            f'<footer>carbonrun {esc(r.get("carbonrun_version", ""))} &middot; {esc(r.get("schema", ""))}'
            f' &middot; run {esc(r.get("uuid", ""))}</footer>']
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")

