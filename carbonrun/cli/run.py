"""`carbonrun run`: measure one command, show it live, store it, summarise it."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import click

from carbonrun.cli.options import MEASUREMENT, RUN_ONLY, Opt, given
from carbonrun.cli import exits


def _click_option(o: Opt) -> Callable:
    """A click option from one row of cli/options.py."""
    kw: Dict[str, Any] = {"help": o.help, "hidden": o.hidden}
    if o.metavar is None:
        kw.update(is_flag=True, default=None)
    elif o.choices:
        kw["type"] = click.Choice(list(o.choices))
    else:
        kw["metavar"] = o.metavar
    if o.multiple:
        kw["multiple"] = True
    return click.option(*o.flags, o.dest, **kw)


def _measurement_options() -> Dict[str, Callable]:
    """Every measurement option by setting name."""
    return {o.dest: _click_option(o) for o in MEASUREMENT}


def options(*names: str) -> Callable:
    """A decorator adding the named measurement options (all of them when none are named)."""
    table = _measurement_options()

    def decorate(f: Callable) -> Callable:
        for name in reversed(names or tuple(table)):
            f = table[name](f)
        return f
    return decorate


def options_from(rows: "tuple[Opt, ...]") -> Callable:
    """A decorator adding click options for these rows, in order."""
    def decorate(f: Callable) -> Callable:
        for o in reversed(rows):
            f = _click_option(o)(f)
        return f
    return decorate


def run_options(f: Callable) -> Callable:
    """The measurement options, shared by `run` and commands that run things (gate, sweep, config)."""
    return options()(f)


def flag_values(ctx: Optional[click.Context], params: Dict[str, Any]) -> Dict[str, Tuple[Any, str]]:
    """What the user gave on the command line, for settings.resolve (env is read there)."""
    return given(params)


@click.command(context_settings={"allow_interspersed_args": False},
               epilog="Examples:\n\n  carbonrun run -- python train.py --epochs 3\n\n"
                      "  carbonrun --region gcp:europe-west9 --pue 1.1 make test\n\n"
                      "  carbonrun --quiet --json run.json -- ./bench\n\n"
                      "  carbonrun run --start-within 8h --expected-duration 2h --provider uk -- ./train.sh")
@run_options
@options_from(RUN_ONLY)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, /, command: Tuple[str, ...], quiet: bool, no_live: bool, json_path: Optional[str],
        **params: Any) -> int:
    """Measure COMMAND: energy per component, the job's share, kg CO2eq, social cost.

    carbonrun exits with COMMAND's exit code (128+N when a signal N killed it, 127 when it
    cannot be found, 126 when it cannot be executed). Signals sent to carbonrun reach COMMAND.
    """
    from carbonrun.cli.measure import measure_options  # the engine: not for commands that borrow run's options

    # As the fast path: exit with the command's code at once, whatever stderr's state at teardown.
    exits.leave(measure_options(command, dict(params, quiet=quiet, no_live=no_live, json_path=json_path)))
