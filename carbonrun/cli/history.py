"""Looking back: `report`, `history`, `compare`, `rm`, `prune`."""
from __future__ import annotations

import sys
from typing import Optional

import click

from carbonrun.errors import CarbonrunError


def open_store(path: Optional[str]):
    import os
    from pathlib import Path

    from carbonrun.store import Store, default_path

    path = path or os.environ.get("CARBONRUN_STORE")
    return Store(Path(path) if path else default_path())


def _complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str):
    store = open_store(ctx.params.get("store"))
    return ["last"] + store.ids(incomplete) if "last".startswith(incomplete) else store.ids(incomplete)


def load(store, ref: str) -> dict:
    from carbonrun.store import StoreError

    try:
        return store.get(ref)
    except StoreError as e:
        raise CarbonrunError(str(e), 2) from None
    except KeyError as e:
        raise CarbonrunError(e.args[0], 1) from None


def emit(text: str, output: Optional[str]) -> None:
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


@click.command(epilog="Examples:\n\n  carbonrun report\n\n  carbonrun report -2 --format markdown\n\n"
                      "  carbonrun report 12 --format html -o run.html")
@click.argument("ref", default="last", shell_complete=_complete_ids)
@click.option("--format", "-f", "fmt", default="table", metavar="FORMAT",
              help="table, json, csv, markdown, html, statement, latex, codecarbon")
@click.option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
@click.option("--store", metavar="PATH", help="The run store.")
def report(ref: str, fmt: str, output: Optional[str], store: Optional[str]) -> int:
    """Show a stored run: REF is `last`, an id, `-N` (the N-th most recent) or a uuid prefix."""
    from carbonrun.cli.render import color_enabled, terminal_width
    from carbonrun.report import available, formatter

    if fmt not in available():
        raise click.BadParameter(f"unknown format {fmt!r}; choose from {', '.join(available())}",
                                 param_hint="--format")
    record = load(open_store(store), ref)
    tty = output is None and sys.stdout.isatty()
    emit(formatter(fmt).render(record, color=tty and color_enabled(sys.stdout),
                               width=terminal_width(sys.stdout) if tty else 100), output)
    return 0
