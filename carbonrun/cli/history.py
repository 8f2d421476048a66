"""Looking back: `report`, `history`, `compare`, `rm`, `prune`.

Every command reads the store named by --store, else CARBONRUN_STORE, else the `store` setting of the
project or user config (as `carbonrun run` does), else the default. Failures are one line through
CarbonrunError: 1 for a run that is not there, 2 for a store that cannot be used.
"""
from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import click

from carbonrun.errors import CarbonrunError

STATUSES = ("completed", "failed", "interrupted", "incomplete", "running")
HISTORY_FORMATS = ("table", "json", "csv", "markdown", "codecarbon")
_REF = re.compile(r"^(last|-?\d+|[0-9a-fA-F-]{4,})$")
# `report -2` must read -2 as a run reference, not an unknown option; refs are validated in `check_ref`.
REF_SETTINGS = {"ignore_unknown_options": True}


def store_spec(flag: Optional[str]) -> Optional[str]:
    """--store > CARBONRUN_STORE > config `store` (project, then user) > None (the default file).

    A string, not a Path: the spec may be a postgresql:// URL (carbonrun/stores.py decides)."""
    if flag:
        return flag
    if os.environ.get("CARBONRUN_STORE"):
        return os.environ["CARBONRUN_STORE"]
    from carbonrun.config import load_layers

    for _label, table in load_layers(os.getcwd(), os.environ):
        if table.get("store"):
            return str(table["store"])
    return None


def open_store(flag: Optional[str]):
    """The store the spec names (SQLite file, or PostgreSQL where stores.py is built); not connected yet."""
    spec = store_spec(flag)
    try:
        from carbonrun.store import open_store as by_spec
    except ImportError:
        from carbonrun.store.sqlite import Store, default_path

        return Store(Path(spec) if spec else default_path())
    return by_spec(spec)


def store_option(f: Callable) -> Callable:
    return click.option("--store", metavar="PATH", help="The run store [env CARBONRUN_STORE, config `store`].")(f)


def _complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str):
    try:
        store = open_store(ctx.params.get("store"))
    except CarbonrunError:
        return []
    return ["last"] + store.ids(incomplete) if "last".startswith(incomplete) else store.ids(incomplete)


def check_ref(ref: str) -> str:
    """A run reference, or the usage error click would have given for an unknown option."""
    if not _REF.match(ref):
        if ref.startswith("-"):
            raise click.NoSuchOption(ref)
        raise click.BadParameter(f"{ref!r} is not a run reference: use last, an id, -N or a uuid prefix",
                                 param_hint="REF")
    return ref


def guarded(call: Callable, *args, **kwargs):
    """Run a store call; its failures become one-line errors with the documented exit codes."""
    from carbonrun.store.sqlite import NoStore, StoreError

    try:
        return call(*args, **kwargs)
    except NoStore as e:
        raise CarbonrunError(str(e), 1) from None
    except StoreError as e:
        raise CarbonrunError(str(e), 2) from None
    except KeyError as e:
        raise CarbonrunError(e.args[0], 1) from None


def load(store, ref: str) -> dict:
    return guarded(store.get, check_ref(ref))


def emit(text: str, output: Optional[str]) -> None:
    if output:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise CarbonrunError(f"cannot write {output}: {e.strerror}", 2) from None
    else:
        sys.stdout.write(text)


def _tty(output: Optional[str]) -> Tuple[bool, int]:
    from carbonrun.cli.render import color_enabled, terminal_width

    tty = output is None and sys.stdout.isatty()
    return tty and color_enabled(sys.stdout), terminal_width(sys.stdout) if tty else 100


# -- report ----------------------------------------------------------------------------------------------
@click.command(context_settings=REF_SETTINGS,
               epilog="Examples:\n\n  carbonrun report\n\n  carbonrun report -2 --format markdown\n\n"
                      "  carbonrun report 12 --format html -o run.html\n\n"
                      "  carbonrun report last --format markdown >> \"$GITHUB_STEP_SUMMARY\"")
@click.argument("ref", default="last", shell_complete=_complete_ids)
@click.option("--format", "-f", "fmt", default="table", metavar="FORMAT",
              help="table, json, csv, markdown, html, statement, latex, codecarbon")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
@click.option("--job", metavar="ID", help="One launcher job (SLURM, torchrun) over all its nodes.")  # issue 11
def report(ref: str, fmt: str, output: Optional[str], store: Optional[str], job: Optional[str] = None) -> int:
    """Show a stored run: REF is `last`, an id, `-N` (the N-th most recent) or a uuid prefix."""
    if job:  # issue 11: carbonrun/cli/cluster.py
        from carbonrun.cli.cluster import report_job

        return report_job(job, fmt, output, store)
    from carbonrun.report import available, formatter

    if fmt not in available():
        raise click.BadParameter(f"unknown format {fmt!r}; choose from {', '.join(available())}",
                                 param_hint="--format")
    record = load(open_store(store), ref)
    color, width = _tty(output)
    emit(formatter(fmt).render(record, color=color, width=width), output)
    return 0


# -- history ---------------------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: Optional[float] = None) -> float:
    """Unix time from `7d`, `12h`, `30m`, `2w`, or an ISO date/time (local time when it has no offset)."""
    m = _RELATIVE.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _SECONDS[m.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: use an ISO date (2024-05-01, 2024-05-01T14:00) or an age"
                                 " (90m, 12h, 7d, 2w)", param_hint="--since") from None
    return when.timestamp()  # naive -> local time, as a user typing a date means


def parse_tags(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--tag")
        out[key] = value
    return out


def _history_cells(r: dict) -> Dict[str, str]:
    from carbonrun.report import units

    return {"id": str(r.get("id")), "started": (r.get("started_at") or "")[:16].replace("T", " "),
            "status": r.get("status", ""), "duration": units.duration(r.get("duration_s") or 0),
            "energy": units.energy(r["energy"]["total_kwh"]), "CO2eq": units.mass(r["emissions"]["kg"]),
            "g/kWh": f"{(r.get('intensity') or {}).get('g_per_kwh', 0):.0f}"}


def history_table(records: List[dict], color: bool, width: int) -> str:
    """One line per run: the command gets the room the figures leave; narrow terminals lose g/kWh, duration."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from carbonrun.report.table import STATUS_STYLE, _console

    cells = [_history_cells(r) for r in records]
    heads = list(cells[0]) if cells else []
    widths = {h: max(len(h), *(len(c[h]) for c in cells)) + 3 for h in heads}  # + padding and rule
    for optional in ("g/kWh", "duration"):
        if width - sum(widths[h] for h in heads) < 24:
            heads.remove(optional)
    room = max(12, width - sum(widths[h] for h in heads))
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for h in heads:
        t.add_column(h, justify="left" if h in ("started", "status") else "right", no_wrap=True)
    t.add_column("command")
    for r, c in zip(records, cells):
        tags = " ".join(f"{k}={v}" for k, v in (r.get("tags") or {}).items())
        cmd = one_line(r.get("command", [])) + (f"  {tags}" if tags else "")
        cmd = cmd if len(cmd) <= room else cmd[:room - 1] + "\u2026"
        c["status"] = f"[{STATUS_STYLE.get(c['status'], 'white')}]{c['status']}[/]"
        t.add_row(*(c[h] for h in heads), escape(cmd))
    con = _console(color, width)
    con.print(t)
    return con.file.getvalue()


@click.command(epilog="Examples:\n\n  carbonrun history\n\n  carbonrun history --tag exp=baseline --since 7d\n\n"
                      "  carbonrun history --command train.py --status completed --limit 0 --format csv > runs.csv\n\n"
                      "  carbonrun history --format codecarbon -o emissions.csv")
@click.option("--tag", "tags", multiple=True, metavar="K=V",
              help="Only runs with this tag (repeatable: all must match).")
@click.option("--command", "command", metavar="SUBSTR", help="Only runs whose command line contains SUBSTR (any case).")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--since", metavar="WHEN",
              help="Only runs started since WHEN: 2024-05-01, 2024-05-01T14:00, 12h, 7d, 2w.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="Show at most N runs, newest first (0: all).")
@click.option("--format", "-f", "fmt", type=click.Choice(HISTORY_FORMATS), default="table", show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
def history(tags: Tuple[str, ...], command: Optional[str], status: Optional[str], since: Optional[str], limit: int,
            fmt: str, output: Optional[str], store: Optional[str]) -> int:
    """List stored runs, newest first, with their energy and emissions.

    The records listed leave out their power timeline: `carbonrun report ID --format json` has it."""
    from carbonrun.report import formatter

    since_ts = parse_since(since) if since else None
    wanted = parse_tags(tags)
    st = open_store(store)
    records = _query(st, limit=limit or None, tags=wanted, command=command, status=status, since_ts=since_ts)
    if fmt == "table":
        if not records:
            sys.stderr.write("carbonrun: no runs match\n" if records is not None else
                             f"carbonrun: no runs stored yet ({st.path})\n")
            return 0
        color, width = _tty(output)
        emit(history_table(records, color, width), output)
    else:
        emit(formatter(fmt).render_many(records or []), output)
    return 0


def _query(st, **filters) -> Optional[List[dict]]:
    """Matching runs, or None when there is no store yet (listing nothing is not an error)."""
    from carbonrun.store.sqlite import NoStore, Store

    if isinstance(st, Store):
        filters["brief"] = True  # a list needs no timelines (`report ID` has them)

    def query() -> Optional[List[dict]]:
        try:
            return st.query(**filters)
        except NoStore:
            return None

    return guarded(query)


# -- compare ---------------------------------------------------------------------------------------------
@click.command(context_settings=REF_SETTINGS,
               epilog="Examples:\n\n  carbonrun compare -2 last\n\n  carbonrun compare 12 15 --format json\n\n"
                      "  carbonrun compare 12 15 --format markdown >> \"$GITHUB_STEP_SUMMARY\"")
@click.argument("a", shell_complete=_complete_ids)
@click.argument("b", shell_complete=_complete_ids)
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table",
              show_default=True)
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
def compare(a: str, b: str, fmt: str, output: Optional[str], store: Optional[str]) -> int:
    """Compare run B with run A: energy, kg CO2eq, duration, each component, and the ratio B/A."""
    from carbonrun.report import compare as cmp

    st = open_store(store)
    ra, rb = load(st, a), load(st, b)
    if fmt == "json":
        emit(cmp.render_json(ra, rb), output)
    elif fmt == "markdown":
        emit(cmp.render_markdown(ra, rb), output)
    else:
        color, width = _tty(output)
        emit(cmp.render_table(ra, rb, color=color, width=width), output)
    return 0


# -- rm and prune ----------------------------------------------------------------------------------------
def one_line(argv: Sequence[str]) -> str:
    """The command line on one line (a `python -c` script has newlines)."""
    return " ".join(" ".join(argv).split())


def _describe(r: dict) -> str:
    cmd = one_line(r.get("command", []))
    return f"run #{r['id']} ({r.get('status')}, {(r.get('started_at') or '')[:16].replace('T', ' ')}: " \
           f"{cmd[:60]}{'...' if len(cmd) > 60 else ''})"


@click.command(context_settings=REF_SETTINGS,
               epilog="Examples:\n\n  carbonrun rm 12\n\n  carbonrun rm 3 4 5\n\n  carbonrun rm last")
@click.argument("refs", nargs=-1, required=True, metavar="ID...", shell_complete=_complete_ids)
@store_option
def rm(refs: Tuple[str, ...], store: Optional[str]) -> int:
    """Remove runs from the store (ids, `last`, `-N` or uuid prefixes). Nothing is removed if one is unknown."""
    st = open_store(store)
    records = {}
    for ref in refs:
        r = load(st, ref)
        if r.get("status") == "running":
            raise CarbonrunError(f"run #{r['id']} is still being measured (carbonrun pid {r.get('pid')});"
                                 " stop it first", 1)
        records[r["id"]] = r
    guarded(st.delete, list(records))
    for r in records.values():
        sys.stdout.write(f"removed {_describe(r)}\n")
    return 0


@click.command(epilog="Examples:\n\n  carbonrun prune --keep 1000\n\n  carbonrun prune --older-than 90 --dry-run\n\n"
                      "  carbonrun prune --keep 100 --older-than 30")
@click.option("--keep", type=click.IntRange(min=0), metavar="N", help="Keep the N most recent runs.")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove runs started more than DAYS days ago.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@store_option
def prune(keep: Optional[int], older_than: Optional[float], dry_run: bool, store: Optional[str]) -> int:
    """Remove old runs. With both options, a run is removed only if it is outside the newest N and older
    than DAYS. Runs still being measured are never removed."""
    if keep is None and older_than is None:
        raise click.UsageError("give --keep N, --older-than DAYS, or both")
    st = open_store(store)
    ids = guarded(st.prune_ids, keep, older_than)
    total = guarded(st.count)
    if dry_run:
        sys.stdout.write(f"would remove {_runs(len(ids))}{_id_ranges(ids)}; {total - len(ids)} would be left"
                         " (dry run, nothing removed)\n")
        return 0
    removed = guarded(st.delete, ids)
    sys.stdout.write(f"removed {_runs(removed)}{_id_ranges(ids)}; {total - removed} left\n")
    return 0


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _id_ranges(ids: List[int], most: int = 6) -> str:
    """' (#1-#40, #42)': contiguous ids collapsed, so a large prune stays one line."""
    if not ids:
        return ""
    spans: List[List[int]] = []
    for i in sorted(ids):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = [f"#{a}" if a == b else f"#{a}-#{b}" for a, b in spans]
    more = f", and {len(text) - most} more ranges" if len(text) > most else ""
    return f" ({', '.join(text[:most])}{more})"
