"""The measurement options as data, without click.

One table serves two parsers: click builds its options from it (`carbonrun run`, gate, sweep, config,
doctor), and the fast path (cli/fast.py) parses `carbonrun [options] COMMAND...` with it without
importing click, which is most of carbonrun's start-up time.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from carbonrun.intensity import providers
from carbonrun.settings import SPECS


class Opt(NamedTuple):
    """One command-line option. `metavar` None means a flag that takes no value."""

    dest: str
    flags: Tuple[str, ...]
    metavar: Optional[str]
    help: str
    multiple: bool = False
    hidden: bool = False
    choices: Tuple[str, ...] = ()
    flag_value: object = True


def _help(name: str, extra: str = "") -> str:
    return SPECS[name].help + extra


# The settings every command that measures accepts, in --help order.
MEASUREMENT: Tuple[Opt, ...] = (
    Opt("interval", ("--interval",), "SECONDS", _help("interval", " [default: 0.1]")),
    Opt("pue", ("--pue",), "X", _help("pue", " [default: 1.0]")),
    Opt("region", ("--region",), "REGION", _help("region")),
    Opt("intensity", ("--intensity",), "G", _help("intensity")),
    Opt("intensity_file", ("--intensity-file",), "FILE", _help("intensity_file")),
    Opt("provider", ("--provider",), "NAME", _help("provider", ": " + providers.names_help())),
    Opt("provider_url", ("--provider-url",), "URL", _help("provider_url"), hidden=True),
    Opt("attribution", ("--attribution",), "[process|machine]", _help("attribution"),
        choices=("process", "machine")),
    Opt("tags", ("--tag",), "K=V", "label the run (repeatable)", multiple=True),
    Opt("gpus", ("--gpus",), "LIST", _help("gpus")),
    Opt("scc", ("--scc",), "L,C,H", _help("scc")),
    Opt("store", ("--store",), "PATH", _help("store")),
    Opt("keep_timeline", ("--keep-timeline",), None, "Store the run's full power timeline, not a coarse one"
        " of at most 120 points (--json always has the full one)."),
    Opt("no_store", ("--no-store",), None, "Measure, show and export as usual, but keep no record"
        " (the same as --store none or --store /dev/null)."),
    Opt("prometheus_textfile", ("--prometheus-textfile",), "DIR", _help("prometheus_textfile")),
    Opt("pushgateway", ("--pushgateway",), "URL", _help("pushgateway")),
    Opt("rapl_root", ("--rapl-root",), "DIR", "", hidden=True),
    Opt("proc_root", ("--proc-root",), "DIR", "", hidden=True),
)

# Options of `carbonrun run` (and the bare `carbonrun COMMAND`) beyond the measurement settings.
RUN_ONLY: Tuple[Opt, ...] = (
    Opt("quiet", ("--quiet", "-q"), None, "No live table; a one-line summary."),
    Opt("no_live", ("--no-live",), None, "No live table; the summary at the end."),
    Opt("verbose", ("--verbose", "-v"), None, "A longer summary: provenance, CPU usage and every note in full."),
    Opt("json_path", ("--json",), "FILE", "Also write the run record to FILE (-: stdout, after the command's output)."),
    Opt("start_within", ("--start-within",), "DURATION", "Wait for the lowest forecast intensity within "
        "DURATION (6h, 1h30m, 2d), then run; Ctrl-C while waiting cancels."),
    Opt("expected_duration", ("--expected-duration",), "DURATION",
        "How long COMMAND runs, for --start-within [default: median of earlier runs]."),
    Opt("start_now", ("--now",), None, "Start at once, ignoring a configured start-within."),
    Opt("embodied", ("--embodied",), None, _help("embodied", ".")),
    Opt("debug", ("--debug",), None, "Show tracebacks for errors (anywhere before COMMAND, as `carbonrun --debug`)."),
)

RUN: Tuple[Opt, ...] = MEASUREMENT + RUN_ONLY
BY_NAME: Dict[str, Opt] = {o.dest: o for o in RUN}
BY_FLAG: Dict[str, Opt] = {f: o for o in RUN for f in o.flags}


def given(params: Mapping[str, Any]) -> Dict[str, Tuple[Any, str]]:
    """The settings the user gave on the command line, for settings.resolve (env is read there)."""
    out = {}
    for name, value in params.items():
        if name in SPECS and value not in (None, (), [], False):
            out[name] = (list(value) if isinstance(value, (tuple, list)) else value, "flag")
    if params.get("no_store"):  # --no-store is --store none
        out["store"] = ("none", "flag")
    return out
