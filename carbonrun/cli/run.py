"""`carbonrun run`: measure one command, show it live, store it, summarise it."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import click

from carbonrun.settings import SPECS


def _measurement_options() -> Dict[str, Callable]:
    """Every measurement option by setting name (built once, on first use)."""
    return {
        "interval": click.option("--interval", metavar="SECONDS", help=SPECS["interval"].help + " [default: 0.1]"),
        "pue": click.option("--pue", metavar="X", help=SPECS["pue"].help + " [default: 1.0]"),
        "region": click.option("--region", metavar="REGION", help=SPECS["region"].help),
        "intensity": click.option("--intensity", metavar="G", help=SPECS["intensity"].help),
        "intensity_file": click.option("--intensity-file", metavar="FILE", help=SPECS["intensity_file"].help),
        "provider": click.option("--provider", metavar="NAME",
                                 help=SPECS["provider"].help + ": uk, electricitymaps, watttime"),
        "provider_url": click.option("--provider-url", metavar="URL", help=SPECS["provider_url"].help, hidden=True),
        "attribution": click.option("--attribution", type=click.Choice(["process", "machine"]),
                                    help=SPECS["attribution"].help),
        "tags": click.option("--tag", "tags", multiple=True, metavar="K=V", help="label the run (repeatable)"),
        "gpus": click.option("--gpus", metavar="LIST", help=SPECS["gpus"].help),
        "scc": click.option("--scc", metavar="L,C,H", help=SPECS["scc"].help),
        "store": click.option("--store", metavar="PATH", help=SPECS["store"].help),
        "prometheus_textfile": click.option("--prometheus-textfile", metavar="DIR",
                                            help=SPECS["prometheus_textfile"].help),
        "pushgateway": click.option("--pushgateway", metavar="URL", help=SPECS["pushgateway"].help),
        "rapl_root": click.option("--rapl-root", metavar="DIR", hidden=True),
        "proc_root": click.option("--proc-root", metavar="DIR", hidden=True),
    }


def options(*names: str) -> Callable:
    """A decorator adding the named measurement options (all of them when none are named)."""
    table = _measurement_options()

    def decorate(f: Callable) -> Callable:
        for name in reversed(names or tuple(table)):
            f = table[name](f)
        return f
    return decorate


def run_options(f: Callable) -> Callable:
    """The measurement options, shared by `run` and commands that run things (gate, sweep, config)."""
    return options()(f)


def flag_values(ctx: click.Context, params: Dict[str, Any]) -> Dict[str, Tuple[Any, str]]:
    """What the user gave on the command line, for settings.resolve (env is read there)."""
    out = {}
    for name, value in params.items():
        if name in SPECS and value not in (None, (), False):
            out[name] = (list(value) if isinstance(value, tuple) else value, "flag")
    return out


@click.command(context_settings={"allow_interspersed_args": False},
               epilog="Examples:\n\n  carbonrun run -- python train.py --epochs 3\n\n"
                      "  carbonrun --region gcp:europe-west9 --pue 1.1 make test\n\n"
                      "  carbonrun --quiet --json run.json -- ./bench\n\n"
                      "  carbonrun run --start-within 8h --expected-duration 2h --provider uk -- ./train.sh")
@run_options
@click.option("--quiet", "-q", is_flag=True, help="No live table; a one-line summary.")
@click.option("--no-live", "no_live", is_flag=True, help="No live table; the full summary at the end.")
@click.option("--json", "json_path", metavar="FILE", help="Also write the run record to FILE.")
# carbon-aware start and embodied carbon (cli/plan.py, embodied.py; docs/carbon.md)
@click.option("--start-within", metavar="DURATION", help="Wait for the lowest forecast intensity within DURATION "
              "(6h, 1h30m, 2d), then run; Ctrl-C while waiting cancels.")
@click.option("--expected-duration", metavar="DURATION",
              help="How long COMMAND runs, for --start-within [default: median of earlier runs].")
@click.option("--now", "start_now", is_flag=True, help="Start at once, ignoring a configured start-within.")
@click.option("--embodied", is_flag=True, default=None, help=SPECS["embodied"].help + ".")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, command: Tuple[str, ...], quiet: bool, no_live: bool, json_path: Optional[str],
        **params: Any) -> int:
    """Measure COMMAND: energy per component, the job's share, kg CO2eq, social cost.

    carbonrun exits with COMMAND's exit code (128+N when a signal N killed it, 127 when it
    cannot be found, 126 when it cannot be executed). Signals sent to carbonrun reach COMMAND.
    """
    from carbonrun.measure.session import block_signals

    block_signals()  # before anything could start a thread: signals are taken with sigtimedwait
    params.update(quiet=quiet or None, live=False if no_live else None, json=json_path)
    start_now = params.pop("start_now", False)  # --now: no planned start (cli/plan.py)
    from carbonrun import settings as settings_mod

    flags = flag_values(ctx, params)
    if no_live:
        flags["live"] = (False, "flag")
    st = settings_mod.resolve(flags)
    if start_now:  # --now wins over a start-within from the environment or a config file
        st.values["start_within"], st.sources["start_within"] = None, "flag --now"
    from carbonrun.cli.measure import measure

    return measure(list(command), st)
