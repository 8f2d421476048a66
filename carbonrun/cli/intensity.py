"""`carbonrun intensity`: the figure a run would use now, and the precedence chain that chose it.

The figure comes from the same runner.resolve_intensity a run uses, so the two can never disagree. Only a
configured live provider touches the network; everything else reads the packaged tables and zone.tab.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import click

from carbonrun.errors import CarbonrunError
from carbonrun.settings import SPECS, Settings

Step = Dict[str, Any]


# -- the chain -------------------------------------------------------------------------------------------
def _where(st: Settings, name: str) -> str:
    src = st.sources.get(name, "default")
    return "on the command line" if src == "flag" else f"from {src}"


def _step(name: str, state: str, detail: str) -> Step:
    return {"step": name, "state": state, "detail": detail}


def chain(st: Settings, result: Any, tz_name: Optional[str] = None) -> List[Step]:
    """Each precedence step (flag > file > provider > region > time zone > world average): used or why not.

    state: used | not set | skipped (a higher step applied; detail says what it would give) | failed.
    """
    from carbonrun.intensity import carbon
    from carbonrun.intensity import regions

    src = result.source
    used_rank = ["flag", "file", "provider", "table", "timezone", "world-average"].index(src.split(":")[0])
    steps: List[Step] = []

    def state(rank: int, is_set: bool) -> str:
        return "used" if rank == used_rank else ("skipped" if rank > used_rank and is_set else "not set")

    ci = st.intensity
    steps.append(_step("--intensity", state(0, ci is not None),
                       f"{ci:g} g/kWh {_where(st, 'intensity')}" if ci is not None else "no fixed figure given"))
    f = st.intensity_file
    steps.append(_step("--intensity-file", state(1, bool(f)),
                       (result.how if src == "file" else f"{f} {_where(st, 'intensity_file')}") if f
                       else "no time series given"))
    steps.append(_provider_step(st, result, used_rank))
    steps.append(_region_step(st, result, used_rank))
    zone = tz_name if tz_name is not None else regions.local_timezone()
    code = regions.guess_from_timezone(zone)
    guess = f"{zone} -> {code}" if code else (f"{zone} names no country" if zone else "no system time zone")
    tz_state = "used" if used_rank == 4 else ("skipped" if code else "no guess")
    steps.append(_step("time zone", tz_state, guess))
    steps.append(_step("world average", "used" if used_rank == 5 else "skipped",
                       f"{carbon.WORLD_AVERAGE_G:g} g/kWh (Ember, 2023)"))
    return steps


def _provider_step(st: Settings, result: Any, used_rank: int) -> Step:
    name = st.provider
    if not name:
        return _step("live provider", "not set", "none configured (no network is used without one)")
    if used_rank == 2:
        return _step("live provider", "used", result.how)
    failed = [n for n in result.notes if n.startswith("live provider")]
    if failed:
        return _step("live provider", "failed", failed[0])
    return _step("live provider", "skipped", f"{name} {_where(st, 'provider')} (not asked: a higher step applied)")


def _region_step(st: Settings, result: Any, used_rank: int) -> Step:
    from carbonrun.intensity.regions import UnknownRegion, lookup

    if not st.region:
        return _step("region", "not set", "give REGION, --region, or `region` in the config")
    try:
        r = lookup(st.region)
    except UnknownRegion:
        return _step("region", "failed", f"{st.region!r} is in no packaged table")
    what = f"{r.key} ({r.name}) {_where(st, 'region')}: {r.g_per_kwh:g} g/kWh ({r.year})"
    return _step("region", "used" if used_rank == 3 else "skipped", what)


# -- compare ---------------------------------------------------------------------------------------------
def compare(record: Dict[str, Any], names: List[str]) -> Dict[str, Any]:
    """What the run's energy would have emitted in each region (annual averages), lowest first."""
    from carbonrun.intensity.regions import UnknownRegion, lookup

    kwh = float(record["energy"]["total_kwh"])
    rows = []
    for name in names:
        try:
            r = lookup(name)
        except UnknownRegion as e:
            raise CarbonrunError(str(e), 2) from None
        rows.append({"region": r.key, "name": r.name, "g_per_kwh": r.g_per_kwh, "year": r.year,
                     "kg": kwh * r.g_per_kwh / 1000.0})
    rows.sort(key=lambda x: x["kg"])
    ci = record.get("intensity") or {}
    return {"run": record.get("id"), "command": record.get("command"), "total_kwh": kwh,
            "actual": {"kg": record["emissions"]["kg"], "g_per_kwh": ci.get("g_per_kwh"),
                       "region": ci.get("region"), "source": ci.get("source")},
            "regions": rows}


def _compare_text(c: Dict[str, Any]) -> str:
    from carbonrun.report.units import energy, mass

    a = c["actual"]
    lines = [f"run #{c['run']} ({' '.join(c['command'] or [])}): {energy(c['total_kwh'])}, "
             f"{mass(a['kg'])} CO2eq at {a['g_per_kwh'] or 0:.0f} g/kWh ({a['region'] or a['source']})", ""]
    width = max(len(r["region"]) for r in c["regions"])
    for r in c["regions"]:
        delta = _delta(r["kg"], a["kg"])
        lines.append(f"  {r['region']:<{width}}  {mass(r['kg']):>12}  {r['g_per_kwh']:>7.1f} g/kWh  {delta:>9}"
                     f"  {r['name']} ({r['year']})")
    best = c["regions"][0]
    lines += ["", f"lowest: {best['region']} ({best['name']}), {_delta(best['kg'], a['kg'])} against this run: "
                  "to cut emissions, move the job to a low-carbon region (annual averages; the hour matters too)"]
    return "\n".join(lines) + "\n"


def _delta(kg: float, ref: float) -> str:
    return f"{(kg - ref) / ref * 100:+.0f}%" if ref > 0 else "n/a"


# -- list ------------------------------------------------------------------------------------------------
def _list_text(rows: List[Any]) -> str:
    if not rows:
        return "no region matches\n"
    w = max(len(r.key) for r in rows)
    n = min(40, max(len(r.name) for r in rows))
    out = [f"{'key':<{w}}  {'name':<{n}}  {'g/kWh':>7}  year  source"]
    out += [f"{r.key:<{w}}  {r.name[:n]:<{n}}  {r.g_per_kwh:>7.1f}  {r.year}  {r.source}" for r in rows]
    return "\n".join(out) + "\n"


def _region_json(r: Any) -> Dict[str, Any]:
    return {"key": r.key, "name": r.name, "g_per_kwh": r.g_per_kwh, "year": r.year, "source": r.source,
            "kind": r.kind}


# -- the figure now --------------------------------------------------------------------------------------
def _now_text(st: Settings, result: Any, steps: List[Step]) -> str:
    where = result.region or {"world-average": "world"}.get(result.source, "no region")
    out = [f"{where}: {result.g_per_kwh:.0f} g CO2eq/kWh ({result.source})", f"  {result.how}", "",
           "how carbonrun chose it (the first step that applies wins):"]
    w = max(len(s["step"]) for s in steps)
    for i, s in enumerate(steps, 1):
        mark = ">" if s["state"] == "used" else " "
        out.append(f"{mark} {i}. {s['step']:<{w}}  {s['state']:<8}  {s['detail']}")
    out += [f"note: {n}" for n in result.notes]
    return "\n".join(out) + "\n"


def _resolve(region_arg: Optional[str], params: Dict[str, Any]) -> Settings:
    from carbonrun import settings as settings_mod

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
                      "  carbonrun intensity --compare FR DE PL   the last run in each region\n"
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
@click.option("--provider", metavar="NAME", help=SPECS["provider"].help + ": uk, electricitymaps, watttime")
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
    from carbonrun.measure.engine import resolve_intensity

    st = _resolve(regions[0] if regions else None, dict(params))
    result = resolve_intensity(st, time.time())
    steps = chain(st, result)
    if as_json:
        out = {k: v for k, v in result.to_record().items()}
        out.update(g_per_kwh=result.g_per_kwh, notes=list(result.notes), chain=steps)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(_now_text(st, result, steps))
    return 0


def _do_list(regions: Tuple[str, ...], as_json: bool) -> int:
    from carbonrun.intensity.regions import list_regions

    if len(regions) > 1:
        raise CarbonrunError("--list takes at most one FILTER", 2)
    rows = list_regions(regions[0] if regions else None)
    sys.stdout.write(json.dumps([_region_json(r) for r in rows], indent=2) + "\n" if as_json else _list_text(rows))
    return 0


def _do_compare(regions: Tuple[str, ...], ref: str, store_path: Optional[str], as_json: bool) -> int:
    from carbonrun.cli.history import load, open_store

    if not regions:
        raise CarbonrunError("--compare needs regions: carbonrun intensity --compare FR DE PL", 2)
    record = load(open_store(store_path), ref)
    if record.get("status") == "running":
        raise CarbonrunError(f"run #{record.get('id')} is still running: compare it once it ends", 1)
    c = compare(record, list(regions))
    sys.stdout.write(json.dumps(c, indent=2) + "\n" if as_json else _compare_text(c))
    return 0
