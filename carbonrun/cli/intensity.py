"""`carbonrun intensity`: the figure a run would use now, and the precedence chain that chose it.

The figure and the chain come from intensity/chain.py, the code a run uses, so the two can never disagree;
this module parses and renders. Only a configured live provider touches the network.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import click

from carbonrun import settings as settings_mod
from carbonrun.errors import CarbonrunError
from carbonrun.intensity import chain, providers
from carbonrun.intensity.carbon import compare_regions
from carbonrun.intensity.regions import UnknownRegion, list_regions
from carbonrun.report.units import ESTIMATE, energy, is_estimated, mass, record_digits
from carbonrun.settings import SPECS, Settings

def _compare_text(c: Dict[str, Any], digits: int = 4, mark: str = "") -> str:
    """`digits` and `mark` ("~" for an estimate): the run's figures as precise as its energy is known."""
    a = c["actual"]
    lines = [f"run #{c['run']} ({' '.join(c['command'] or [])}): {mark}{energy(c['total_kwh'], digits)}, "
             f"{mark}{mass(a['kg'], digits)} CO2eq at {a['g_per_kwh'] or 0:.0f} g/kWh"
             f" ({a['region'] or a['source']})", ""]
    width = max(len(r["region"]) for r in c["regions"])
    kg_width = max(len(mark + mass(r["kg"], digits)) for r in c["regions"])
    for r in c["regions"]:
        delta = _delta(r["kg"], a["kg"])
        lines.append(f"  {r['region']:<{width}}  {mark + mass(r['kg'], digits):>{kg_width}}  {r['g_per_kwh']:>7.1f}"
                     f" g/kWh  {delta:>9}"
                     f"  {r['name']} ({r['year']}, {r.get('basis', 'lifecycle')})")
    best = c["regions"][0]
    lines += ["", f"lowest: {best['region']} ({best['name']}), {_delta(best['kg'], a['kg'])} against this run: "
                  "to cut emissions, move the job to a low-carbon region (annual averages; the hour matters too)"]
    lines += [f"note: {n}" for n in c.get("notes", [])]
    return "\n".join(lines) + "\n"


def _delta(kg: float, ref: float) -> str:
    return f"{(kg - ref) / ref * 100:+.0f}%" if ref > 0 else "n/a"


# -- list ------------------------------------------------------------------------------------------------
def _list_text(rows: List[Any]) -> str:
    if not rows:
        return "no region matches\n"
    w = max(len(r.key) for r in rows)
    n = min(40, max(len(r.name) for r in rows))
    out = [f"{'key':<{w}}  {'name':<{n}}  {'g/kWh':>7}  year  basis        source"]
    out += [f"{r.key:<{w}}  {r.name[:n]:<{n}}  {r.g_per_kwh:>7.1f}  {r.year}  {r.basis:<11}  {r.source}" for r in rows]
    return "\n".join(out) + "\n"


def _region_json(r: Any) -> Dict[str, Any]:
    return {"key": r.key, "name": r.name, "g_per_kwh": r.g_per_kwh, "year": r.year, "source": r.source,
            "kind": r.kind, "basis": r.basis}


# -- the figure now --------------------------------------------------------------------------------------
def _now_text(st: Settings, result: Any, steps: List[Dict[str, Any]]) -> str:
    where = result.region or {"world-average": "world"}.get(result.source, "no region")
    out = [f"{where}: {result.g_per_kwh:.0f} g CO2eq/kWh ({result.source})", f"  {result.how}", "",
           "how carbonrun chose it (the first step that applies wins):"]
    w = max(len(s["label"]) for s in steps)
    for i, s in enumerate(steps, 1):
        mark = ">" if s["used"] else " "
        out.append(f"{mark} {i}. {s['label']:<{w}}  {s['state']:<8}  {s['detail']}")
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"


def _resolve(region_arg: Optional[str], params: Dict[str, Any]) -> Settings:
    if region_arg and params.get("region") and region_arg != params["region"]:
        raise CarbonrunError(f"two regions given ({region_arg!r} and --region {params['region']!r}): give one", 2)
    if region_arg:
        params["region"] = region_arg
    return settings_mod.resolve({k: (v, "flag") for k, v in params.items() if v is not None})


@click.command(epilog="Examples:\n\n\b\n"
                      "  carbonrun intensity                      what a run here would use, and why\n"
                      "  carbonrun intensity FR                   France's annual figure\n"
                      "  carbonrun intensity --region gcp:europe-west9 --json\n"
                      "  carbonrun intensity --list france        regions matching 'france'\n"
                      "  carbonrun intensity --list aws:          AWS regions\n"
                      "  carbonrun intensity --compare FR DE PL   the last run in each region (or FR,DE,PL)\n"
                      "  carbonrun intensity --provider uk        the live value (network)")
@click.argument("regions", nargs=-1, metavar="[REGION]...")
@click.option("--list", "list_mode", is_flag=True, help="List known regions; REGION filters (key, name, kind).")
@click.option("--compare", "compare_mode", is_flag=True,
              help="What the last run (or --run) would have emitted in each REGION, lowest first.")
@click.option("--run", "run_ref", metavar="ID", default="last", help="The run for --compare [default: last].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--region", metavar="REGION", help=SPECS["region"].help)
@click.option("--intensity", metavar="G", help=SPECS["intensity"].help)
@click.option("--intensity-file", metavar="FILE", help=SPECS["intensity_file"].help)
@click.option("--provider", metavar="NAME", help=SPECS["provider"].help + ": " + providers.names_help())
@click.option("--provider-url", metavar="URL", help=SPECS["provider_url"].help, hidden=True)
@click.option("--store", metavar="PATH", help=SPECS["store"].help)
def intensity(regions: Tuple[str, ...], list_mode: bool, compare_mode: bool, run_ref: str, as_json: bool,
              **params: Any) -> int:
    """The grid intensity carbonrun would use now, and why.

    Shows the figure a run started now would be accounted with and each step of the precedence
    (--intensity > --intensity-file > live provider > region > time zone > world average): which
    applied, which were not set, and what the skipped ones would give. Unknown regions exit 2 with
    suggestions. No network is used unless a live provider is configured.
    """
    if list_mode and compare_mode:
        raise CarbonrunError("--list and --compare do not go together", 2)
    if list_mode:
        return _do_list(regions, as_json)
    if compare_mode:
        return _do_compare(regions, run_ref, params.get("store"), as_json)
    if len(regions) > 1:
        raise CarbonrunError("give one REGION (or --compare R1 R2 ... to compare several)", 2)
    st = _resolve(regions[0] if regions else None, dict(params))
    result = chain.from_settings(st, time.time())
    steps = chain.explain(st, result)
    if as_json:
        out = {k: v for k, v in result.to_record().items()}
        out.update(g_per_kwh=result.g_per_kwh, notes=list(result.notes), chain=steps)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(_now_text(st, result, steps))
    return 0


def _do_list(regions: Tuple[str, ...], as_json: bool) -> int:
    if len(regions) > 1:
        raise CarbonrunError("--list takes at most one FILTER", 2)
    rows = list_regions(regions[0] if regions else None)
    sys.stdout.write(json.dumps([_region_json(r) for r in rows], indent=2) + "\n" if as_json else _list_text(rows))
    return 0


def _do_compare(regions: Tuple[str, ...], ref: str, store_path: Optional[str], as_json: bool) -> int:
    from carbonrun.cli.history import load_started, open_store  # the store (sqlite3) only for --compare

    regions = tuple(r.strip() for arg in regions for r in arg.split(",") if r.strip())  # FR,DE as FR DE
    if not regions:
        raise CarbonrunError("--compare needs regions: carbonrun intensity --compare FR DE PL", 2)
    record = load_started(open_store(store_path), ref)
    if record.get("status") == "running":
        raise CarbonrunError(f"run #{record.get('id')} is still running: compare it once it ends", 1)
    try:
        c = compare_regions(record, list(regions))
    except UnknownRegion as e:
        raise CarbonrunError(str(e), 2) from None
    text = None if as_json else _compare_text(c, record_digits(record), ESTIMATE if is_estimated(record) else "")
    sys.stdout.write(json.dumps(c, indent=2) + "\n" if text is None else text)
    return 0
