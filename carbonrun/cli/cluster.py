"""Cluster commands: `sync` (send spooled runs to PostgreSQL) and `report --job ID` (one job, all nodes)."""
from __future__ import annotations

import json
from typing import Optional

import click

from carbonrun.cli.history import store_spec

from carbonrun.errors import CarbonrunError

JOB_FORMATS = ("table", "json")


@click.command(epilog="Examples:\n\n  carbonrun sync\n\n  carbonrun sync --store postgresql://carbonrun@db/carbonrun")
@click.option("--store", metavar="URL", help="The PostgreSQL store [env CARBONRUN_STORE, config `store`].")
def sync(store: Optional[str]) -> int:
    """Send the runs kept locally while the PostgreSQL store was unreachable.

    Safe to repeat or to run twice at once: a run is sent once (by uuid) and its local copy is
    removed only after the database has it. Exits 1 when some runs could not be sent.
    """
    from carbonrun.store import postgres as pgstore
    from carbonrun import store as stores
    from carbonrun.store.base import StoreError

    spec, waiting = store_spec(store), pgstore.pending()
    if not waiting:
        click.echo("nothing to sync: no spooled runs")
        return 0
    if spec is None or not stores.is_url(spec):
        raise CarbonrunError(f"{len(waiting)} spooled run(s) wait in {pgstore.spool_dir()}: pass --store"
                             " postgresql://... (the store is not a PostgreSQL URL)", 2)
    pg = pgstore.PgStore(spec)
    try:
        sent, errors, others = pg.sync()
    except StoreError as e:
        raise CarbonrunError(f"{e}; {len(waiting)} spooled run(s) stay in {pg.spool}", 1) from None
    finally:
        pg.close()
    click.echo(f"sent {sent} spooled run(s) to {pg.where}")
    for target in sorted(set(others)):
        click.echo(f"{others.count(target)} spooled run(s) are for {target}: carbonrun sync --store <that URL>")
    for error in errors:
        click.echo(f"not sent: {error}", err=True)
    return 1 if errors else 0


def report_job(job_id: str, fmt: str, output: Optional[str], store: Optional[str]) -> int:
    """`carbonrun report --job ID`: one line per node and the job's totals (each node counted once)."""
    from carbonrun.measure import launcher
    from carbonrun import store as stores
    from carbonrun.store.base import NoStore, StoreError

    if fmt not in JOB_FORMATS:
        raise click.BadParameter(f"{fmt!r} is not available with --job; choose from {', '.join(JOB_FORMATS)}",
                                 param_hint="--format")
    st = stores.open_store(store_spec(store))
    try:
        agg = launcher.aggregate(launcher.job_records(st, job_id), job_id)
    except StoreError as e:
        raise CarbonrunError(str(e), 1 if isinstance(e, NoStore) else 2) from None
    except KeyError as e:
        raise CarbonrunError(e.args[0], 1) from None
    from carbonrun.cli.history import emit

    emit(json.dumps(agg, indent=2) + "\n" if fmt == "json" else job_table(agg), output)
    return 0


def job_table(agg: dict) -> str:
    from carbonrun.report import units

    e, em = agg["energy"], agg["emissions"]
    d = units.digits_for(em["kg"], em.get("low_kg"), em.get("high_kg"))  # an estimate gets fewer digits, no range
    lines = [
        f"job {agg['job_id']} ({agg['launcher']}): {agg['nodes']} node(s), {agg['ranks']} rank(s),"
        f" {agg['runs']} run(s), {agg['metering_runs']} metering the nodes",
        f"energy      {units.energy(e['total_kwh'])} (machines {units.energy(e['machine_kwh'])})",
        f"emissions   {units.span(units.mass, em['kg'], em.get('low_kg'), em.get('high_kg'), d, ' CO2eq')}",
        f"duration    {units.duration(agg['duration_s'])} (longest run)",
        "",
        f"{'node':<24} {'ranks':>5} {'runs':>5} {'energy':>14} {'emissions':>14} {'duration':>10}",
    ]
    for n in agg["per_node"]:
        lines.append(f"{n['node'][:24]:<24} {n['ranks']:>5} {n['runs']:>5} {units.energy(n['total_kwh']):>14}"
                     f" {units.mass(n['kg']):>14} {units.duration(n['duration_s']):>10}")
    lines += [f"note: {n}" for n in agg["notes"]]
    return "\n".join(lines) + "\n"
