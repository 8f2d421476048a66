"""Cluster commands: `sync` (send spooled runs to PostgreSQL, import kept-aside records into the store) and
`report --job ID` (one job, all nodes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import click

from carbonrun import sanitize, store as stores
from carbonrun.cli.history import emit, store_spec
from carbonrun.errors import CarbonrunError
from carbonrun.store import kept, postgres as pgstore
from carbonrun.store.base import NoStore, StoreError
from carbonrun.measure import launcher
from carbonrun.report import units

if TYPE_CHECKING:
    from carbonrun.store.base import Store

JOB_FORMATS = ("table", "json")


@click.command(epilog="Examples:\n\n  carbonrun sync\n\n  carbonrun sync --store postgresql://carbonrun@db/carbonrun"
               "\n\n  carbonrun sync --store runs.sqlite")
@click.option("--store", metavar="PATH|URL", help="The store to put them in [env CARBONRUN_STORE, config `store`;"
              " default: runs.sqlite in the data directory].")
def sync(store: Optional[str]) -> int:
    """Put into the store the runs it could not take when they ran.

    Two kinds wait. Runs spooled while a PostgreSQL store was unreachable are sent to it (give its
    URL). Records kept aside when a store failed (a full or read-only disk, a lock, a refused path),
    in the data directory's `kept` folder (else $XDG_STATE_HOME/carbonrun/kept, else
    $TMPDIR/carbonrun-UID/kept), are imported into the store, whatever its kind; a stored checkpoint
    of the same run is completed by the kept final record.

    Safe to repeat or to run twice at once: a run is stored once (by uuid) and its file is removed
    only after the store gives the run back. A damaged file stays where it is, named on stderr.
    One line per run, then a count.

    \b
    Exit status:
      0  everything went in, or nothing was waiting
      1  some runs could not be sent or imported (their files stay)
      2  the store cannot take them (`none`, or spooled runs and no postgresql:// URL)
    """
    spec, waiting = store_spec(store), pgstore.pending()
    files, refused = kept.pending()
    if not waiting and not files and not refused:
        click.echo("nothing to sync: no spooled or kept-aside runs")
        return 0
    ok = True
    if waiting and stores.is_url(spec):
        ok = _send_spooled(str(spec), len(waiting))
    elif waiting and not files:
        raise CarbonrunError(f"{len(waiting)} spooled run(s) wait in {pgstore.spool_dir()}: pass --store"
                             " postgresql://... (the store is not a PostgreSQL URL)", 2)
    elif waiting:
        _warn(f"{len(waiting)} spooled run(s) wait in {pgstore.spool_dir()} for a PostgreSQL store:"
              " carbonrun sync --store postgresql://... sends them")
    if files or refused:
        ok = _import_kept(stores.open_store(spec), files) and ok
    return 0 if ok else 1


def _say(line: str) -> None:
    click.echo(sanitize.terminal(line), err=True)


def _warn(line: str) -> None:
    _say(f"carbonrun: warning: {line}")


def _send_spooled(spec: str, waiting: int) -> bool:
    """Send the PostgreSQL spool; False when some runs stay in it."""
    pg = pgstore.PgStore(spec)
    try:
        sent, errors, others = pg.sync()
    except StoreError as e:
        _say(f"carbonrun: error: {e}; {waiting} spooled run(s) stay in {pg.spool}")
        return False
    finally:
        pg.close()
    click.echo(f"sent {sent} spooled run(s) to {pg.where}")
    for target in sorted(set(others)):
        click.echo(f"{others.count(target)} spooled run(s) are for {target}: carbonrun sync --store <that URL>")
    for error in errors:
        click.echo(f"not sent: {error}", err=True)
    return not errors


def _import_kept(st: "Store", files: List[Path]) -> bool:
    """Import the kept-aside records (store/kept.py): a line per file, then the count; False when
    some stay where they are."""
    try:
        outcomes = kept.import_kept(st)
    except StoreError as e:
        if st.kind == "none":
            raise CarbonrunError(f"{len(files)} kept-aside run(s) wait: {e}", 2) from None
        where = ", ".join(sorted({str(f.parent) for f in files}))
        _say(f"carbonrun: error: {e}; {len(files)} kept-aside run(s) stay in {where}")
        return False
    finally:
        st.close()
    for o in outcomes:
        if o.result == kept.IMPORTED:
            click.echo(sanitize.terminal(f"imported {o.detail} from {o.path}"))
        elif o.result == kept.COMPLETED:
            click.echo(sanitize.terminal(f"completed {o.detail} (the store held a checkpoint) from {o.path}"))
        elif o.result == kept.STORED:
            click.echo(sanitize.terminal(f"already stored: {o.detail}; {o.path} removed"))
        else:
            _warn(f"{o.path} left in place: {o.result}: {o.detail}")
    done, stored, left = kept.outcomes_summary(outcomes)
    click.echo(f"imported {done} kept-aside run(s) into {sanitize.terminal(st.where)}"
               f" ({stored} already stored, {left} left in place)")
    return left == 0


def report_job(job_id: str, fmt: str, output: Optional[str], store: Optional[str]) -> int:
    """`carbonrun report --job ID`: one line per node and the job's totals (each node counted once)."""
    if fmt not in JOB_FORMATS:
        raise click.BadParameter(f"{fmt!r} is not available with --job; choose from {', '.join(JOB_FORMATS)}",
                                 param_hint="--format")
    st = stores.open_store(store_spec(store))
    try:
        agg = launcher.aggregate(launcher.job_records(st, job_id), job_id)
    except StoreError as e:
        raise CarbonrunError(str(e), 1 if isinstance(e, NoStore) else 2) from None
    except KeyError as e:  # an unknown job is bad input, like an unknown run (exit 2, with a hint)
        raise CarbonrunError(f"{e.args[0]}; a job is named by its SLURM_JOB_ID or torchrun run id"
                             " (`carbonrun history --format json` shows each run's job)", 2) from None

    emit(json.dumps(agg, indent=2) + "\n" if fmt == "json" else job_table(agg), output)
    return 0


def job_table(agg: dict) -> str:
    e, em = agg["energy"], agg["emissions"]
    d = units.digits_for(em["kg"], em.get("low_kg"), em.get("high_kg"))  # an estimate gets fewer digits, no range
    mark = units.ESTIMATE if d < 4 else ""  # energy and each node's figures as precise as the emissions
    lines = [
        f"job {agg['job_id']} ({agg['launcher']}): {agg['nodes']} node(s), {agg['ranks']} rank(s),"
        f" {agg['runs']} run(s), {agg['metering_runs']} metering the nodes",
        f"energy      {mark}{units.energy(e['total_kwh'], d)} (machines {mark}{units.energy(e['machine_kwh'], d)})",
        f"emissions   {units.span(units.mass, em['kg'], em.get('low_kg'), em.get('high_kg'), d, ' CO2eq')}",
        f"duration    {units.duration(agg['duration_s'])} (longest run)",
        "",
        f"{'node':<24} {'ranks':>5} {'runs':>5} {'energy':>14} {'emissions':>14} {'duration':>10}",
    ]
    for n in agg["per_node"]:
        lines.append(f"{n['node'][:24]:<24} {n['ranks']:>5} {n['runs']:>5} {mark + units.energy(n['total_kwh'], d):>14}"
                     f" {mark + units.mass(n['kg'], d):>14} {units.duration(n['duration_s']):>10}")
    lines += [f"note: {n}" for n in agg["notes"]]
    return "\n".join(lines) + "\n"
