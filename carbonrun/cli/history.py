"""Looking back: `report`, `history`, `compare`, `rm`, `prune`.

Every command reads the store named by --store, else CARBONRUN_STORE, else the `store` setting of the
project or user config (as `carbonrun run` does), else the default. Failures are one line through
CarbonrunError: 1 when nothing is stored yet, 2 for a run id that is not there or a store that cannot be used.
"""
from __future__ import annotations

import os
import gc
import re
import sys
import time
from itertools import starmap
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import click

from carbonrun.cli import exits
from carbonrun.cli.numbers import FiniteRange

from carbonrun import files, timefmt
from carbonrun.errors import CarbonrunError
from carbonrun.record import STATUSES
from carbonrun.report import available, compare as cmp, FORMATS, formatter, text as tx
from carbonrun.report import units
from carbonrun.config import load_layers
from carbonrun.store import open_store as by_spec
from carbonrun.store.base import NoStore, StoreError, UnreadableRun
from carbonrun.report.units import never_started
from carbonrun.sanitize import terminal, terminal_output  # stored text never drives the terminal
from carbonrun.cli.render import color_enabled, terminal_width

if TYPE_CHECKING:
    from carbonrun.store.base import Store, Summary

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

    for _label, table in load_layers(os.getcwd(), os.environ):
        if table.get("store"):
            return str(table["store"])
    return None


def open_store(flag: Optional[str]) -> "Store":
    """The store the spec names (SQLite file, PostgreSQL URL, or none); not connected yet."""
    return by_spec(store_spec(flag))


def warn_skipped(store: "Store") -> None:
    """Say which stored records could not be read (and were left out), once each."""
    for warning in dict.fromkeys(store.warnings):
        sys.stderr.write(f"carbonrun: warning: {warning}\n")
    store.warnings.clear()


def store_option(f: Callable) -> Callable:
    return click.option("--store", metavar="PATH",
                        help="The run store: an SQLite file or a postgresql:// URL"
                             " [env CARBONRUN_STORE, config `store`].")(f)


def _complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[str]:
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


def guarded(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a store call; its failures become one-line errors with the documented exit codes."""
    try:
        return call(*args, **kwargs)
    except NoStore as e:
        raise CarbonrunError(str(e), 1) from None
    except StoreError as e:
        raise CarbonrunError(str(e), 2) from None
    except KeyError as e:
        message = str(e.args[0])
        if message.startswith("no runs stored yet"):
            raise CarbonrunError(message, 1) from None
        raise CarbonrunError(f"{message}; `carbonrun history` lists the stored runs", 2) from None


def load(store: "Store", ref: str) -> dict:
    return guarded(store.get, check_ref(ref))


def _get_or_skip(store: "Store", ref: str) -> Optional[dict]:
    """store.get; None, with a warning naming it, for a run whose record cannot be read."""
    try:
        return store.get(ref)
    except UnreadableRun as e:
        sys.stderr.write(f"carbonrun: warning: {e}: skipped\n")
        return None


def load_started(store: "Store", ref: str, back: int = 50) -> dict:
    """`load`, except that `last` and `-N` count only runs whose command started (not a typo's 127)."""
    if ref != "last" and not re.fullmatch(r"-\d+", ref):
        return load(store, ref)
    wanted, seen, offset = (1 if ref == "last" else int(ref[1:])), 0, 0
    while offset < back:
        offset += 1
        record = guarded(_get_or_skip, store, f"-{offset}")  # one bad record never hides the others
        if record is None:
            continue
        if not never_started(record):
            seen += 1
            if seen == wanted:
                return record
    raise CarbonrunError(f"no run that started among the last {back}; `carbonrun history` lists them", 1)


def emit(text: str, output: Optional[str]) -> None:
    if output:
        try:
            files.write_atomic(output, text)
        except OSError as e:
            raise CarbonrunError(f"cannot write {output}: {e.strerror}", 2) from None
    else:
        if sys.stdout.isatty():  # stored text must not drive the terminal, whatever the format
            text = terminal_output(text)
        sys.stdout.write(text)


def _tty(output: Optional[str]) -> Tuple[bool, int]:
    """Colour and width for stdout; width 0 (no wrapping) for a file or a pipe."""
    tty = output is None and sys.stdout.isatty()
    return tty and color_enabled(sys.stdout), terminal_width(sys.stdout) if tty else 0


# -- report ----------------------------------------------------------------------------------------------
EXTENSIONS = {".html": "html", ".htm": "html", ".json": "json", ".csv": "csv", ".md": "markdown",
              ".markdown": "markdown", ".tex": "latex", ".txt": "table"}


def format_for(output: Optional[str], allowed: Optional[Sequence[str]] = None) -> str:
    """The format an output file's extension names (`-o run.html`) among `allowed`, else table."""
    fmt = EXTENSIONS.get(os.path.splitext(output or "")[1].lower(), "table")
    return fmt if allowed is None or fmt in allowed else "table"


def _complete_formats(ctx: click.Context, param: click.Parameter, incomplete: str) -> List[str]:
    return [f for f in FORMATS if f.startswith(incomplete)]


@click.command(context_settings=REF_SETTINGS,
               epilog="Examples:\n\n  carbonrun report\n\n  carbonrun report -2 --format markdown\n\n"
                      "  carbonrun report 12 --format html -o run.html\n\n"
                      "  carbonrun report last --format markdown >> \"$GITHUB_STEP_SUMMARY\"")
@click.argument("ref", default="last", shell_complete=_complete_ids)
@click.option("--format", "-f", "fmt", default=None, metavar="FORMAT", shell_complete=_complete_formats,
              help="table, json, csv, markdown, html, statement, latex, codecarbon [default: from the -o"
                   " extension, else table]")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
@click.option("--job", metavar="ID", help="One launcher job (SLURM, torchrun) over all its nodes.")
def report(ref: str, fmt: Optional[str], output: Optional[str], store: Optional[str], job: Optional[str] = None) -> int:
    """Show a stored run: REF is `last`, an id, `-N` (the N-th most recent) or a uuid prefix."""
    fmt = fmt or format_for(output)
    if job:  # one row per node: carbonrun/cli/cluster.py
        from carbonrun.cli.cluster import report_job  # cluster imports this module: a cycle at import time

        return report_job(job, fmt, output, store)

    if fmt not in available():
        raise click.BadParameter(f"unknown format {fmt!r}; choose from {', '.join(available())}",
                                 param_hint="--format")
    record = load(open_store(store), ref)
    color, width = _tty(output)
    extra = {"verbose": True} if fmt == "table" else {}  # the table: provenance, usage and every note
    emit(formatter(fmt).render(record, color=color, width=width, **extra), output)
    return 0


# -- history ---------------------------------------------------------------------------------------------
def parse_since(text: str, now: Optional[float] = None) -> float:
    """Unix time from an age (`7d`, `1h30m`: the one duration grammar) or an ISO date/time (local time)."""
    try:
        return timefmt.parse_since(text, time.time() if now is None else now)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


def parse_tags(items: Sequence[str]) -> Dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not K=V (a key, =, a value)", param_hint="--tag")
        out[key] = value
    return out


HISTORY_HEADS = ["id", "started", "status", "duration", "energy", "CO2eq", "g/kWh", "command"]


def _history_row(s: "Summary", commands: Dict[Tuple[Any, ...], str], grid: Dict[float, str]) -> List[str]:
    """A run's cells in HISTORY_HEADS order: figures at the precision its stored range allows,
    estimates marked `~` (report/units.py), the command line and tags made printable.

    Read from a Summary, made into a list; what repeats from run to run is made once: the command
    line (in `commands`, by the argv's words and the tags' text) and the grid intensity (in `grid`,
    by value). A listing formats 100,000 rows, most of them repeating a few of each."""
    never = units.did_not_start(s.exit_code, s.samples, s.total_kwh)
    if never:
        energy = co2 = "-"
    else:  # figures() without its ranges, which a listing does not show
        d = units.digits_for(s.total_kwh, s.low_kwh, s.high_kwh)
        mark = units.ESTIMATE if s.measured in units.ESTIMATED else ""
        energy = mark + units.energy(s.total_kwh, d)
        co2 = mark + units.mass(s.kg, d)
    tags = " ".join(starmap("{}={}".format, s.tags.items())) if s.tags else ""
    try:
        key = (*s.command, tags)  # the argv's words and the tags' text fully decide the line
        command = commands[key]
    except (KeyError, TypeError):  # TypeError: words that are not text, which one_line reports
        command = tx.printable(one_line(s.command) + (f"  {tags}" if tags else ""))
        commands[key] = command
    g = s.g_per_kwh
    if g is None:
        intensity = "-"
    else:
        intensity = grid.get(g) or units.intensity(g)
        if g > 0:  # not 0.0 and -0.0: equal keys, but they print "0" and "-0"
            grid[g] = intensity
    return [str(s.id), (s.started_at or "")[:16].replace("T", " "), s.status if not never else "not started",
            units.duration(s.duration_s or 0), energy, co2, intensity, command]


def history_rows(summaries: List["Summary"]) -> List[List[str]]:
    """Each run's cells in HISTORY_HEADS order; a command line or an intensity that repeats is made once."""
    commands: Dict[Tuple[Any, ...], str] = {}
    grid: Dict[float, str] = {}
    return [_history_row(s, commands, grid) for s in summaries]


def history_table(records: List[dict], color: bool, width: int) -> str:
    """The listing of records (full or brief), as `history` shows the store's summaries."""
    from carbonrun.store.base import summary_of  # for callers with records: `history` has Summary rows

    return history_text(history_rows([summary_of(r) for r in records]), color, width)


def history_text(rows: List[List[str]], color: bool, width: int) -> str:
    """One line per run; on a narrow terminal g/kWh, duration and started go before the figures do."""
    lines = tx.table(HISTORY_HEADS, rows, width, right=(0, 3, 4, 5, 6), drop=(6, 3, 1), flex=7, color=color)
    if color:
        from carbonrun.report.table import STATUS_STYLE  # the run summary's module: loaded only for colour

        for i, row in enumerate(rows, start=1):
            status = row[2]
            lines[i] = lines[i].replace(status, tx.style(status, STATUS_STYLE.get(status), color), 1)
    estimated = any(row[4].startswith(units.ESTIMATE) for row in rows)
    legend = [f"{tx.style('~', 'dim', color)} estimated"] if estimated else []
    return "\n".join(lines + legend) + "\n"


@click.command(epilog="Examples:\n\n  carbonrun history\n\n  carbonrun history --tag exp=baseline --since 7d\n\n"
                      "  carbonrun history --command train.py --status completed --limit 0 --format csv > runs.csv\n\n"
                      "  carbonrun history --format codecarbon -o emissions.csv")
@click.option("--tag", "tags", multiple=True, metavar="K=V",
              help="Only runs with this tag (repeatable: all must match).")
@click.option("--command", "command", metavar="SUBSTR", help="Only runs whose command line contains SUBSTR (any case).")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--since", metavar="WHEN",
              help="Only runs started since WHEN: 2024-05-01, 2024-05-01T14:00, 12h, 1h30m, 7d, 2w.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="Show at most N runs, newest first (0: all).")
@click.option("--format", "-f", "fmt", type=click.Choice(HISTORY_FORMATS), default=None,
              help="[default: from the -o extension (.csv, .json, .md), else table]")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
def history(tags: Tuple[str, ...], command: Optional[str], status: Optional[str], since: Optional[str], limit: int,
            fmt: Optional[str], output: Optional[str], store: Optional[str]) -> int:
    """List stored runs, newest first, with their energy and emissions.

    The records listed leave out their power timeline: `carbonrun report ID --format json` has it."""
    fmt = fmt or format_for(output, HISTORY_FORMATS)
    since_ts = parse_since(since) if since else None
    wanted = parse_tags(tags)
    st = open_store(store)
    filters = dict(limit=limit or None, tags=wanted, command=command, status=status, since_ts=since_ts)
    if fmt == "table":  # a listing reads small columns, into tuples: no records
        records: Optional[List[Any]] = _query(st.summaries, **filters)
    else:  # no timelines (`report ID` has them); Markdown needs no more than the small columns either
        records = _query(st.query, brief=True, summary=fmt == "markdown", **filters)
    gc.disable()  # the records live until exit and a listing makes no cycles: collections would only rescan rows
    warn_skipped(st)
    if fmt == "table":
        if not records:
            sys.stderr.write("carbonrun: no runs match\n" if records is not None else
                             f"carbonrun: no runs stored yet ({st.where})\n")
            return 0
        color, width = _tty(output)
        rows = history_rows(records)  # kept until the exit below, which frees nothing one by one
        emit(history_text(rows, color, width), output)
    else:
        emit(formatter(fmt).render_many(records or []), output)
    sys.stdout.flush()  # a closed pipe or a full disk is reported now, not lost in the exit below
    exits.leave(0)  # as `run` does: freeing 100,000 records one by one at exit would only cost time


def _query(query: Callable[..., List[Any]], **filters: Any) -> Optional[List[Any]]:
    """Matching runs (store.query or store.summaries), or None when there is no store yet (listing
    nothing is not an error)."""
    def matching() -> Optional[List[Any]]:
        try:
            return query(**filters)
        except NoStore:
            return None

    return guarded(matching)


# -- compare ---------------------------------------------------------------------------------------------
@click.command(context_settings=REF_SETTINGS,
               epilog="Examples:\n\n  carbonrun compare -2 last\n\n  carbonrun compare 12 15 --format json\n\n"
                      "  carbonrun compare 12 15 --format markdown >> \"$GITHUB_STEP_SUMMARY\"")
@click.argument("a", shell_complete=_complete_ids)
@click.argument("b", shell_complete=_complete_ids)
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json", "markdown"]), default=None,
              help="[default: from the -o extension (.json, .md), else table]")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@store_option
def compare(a: str, b: str, fmt: Optional[str], output: Optional[str], store: Optional[str]) -> int:
    """Compare run B with run A: energy, kg CO2eq, duration, each component, and the ratio B/A."""
    fmt = fmt or format_for(output, ("json", "markdown"))
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
    cmd = terminal(one_line(r.get("command", [])))
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
@click.option("--older-than", "older_than", type=FiniteRange(min=0), metavar="DAYS",
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
