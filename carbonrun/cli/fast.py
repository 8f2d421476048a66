"""The fast path: `carbonrun [run options] COMMAND...` parsed without importing click.

click costs about half of carbonrun's start-up, and a measured command should start as if carbonrun
were not there. This parser reads the same option table as click (cli/options.py) and accepts only
what it fully understands; anything else (a subcommand, --help, --version, an unknown or malformed
option, a first word that is not a program on PATH) returns None, and click handles it with its own
messages, so the two paths never disagree on what a command line means.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from carbonrun.cli import exits
from carbonrun.cli.commands import COMMANDS
from carbonrun.cli.options import BY_FLAG

Parsed = Tuple[List[str], Dict[str, Any]]


def parse(args: List[str]) -> Optional[Parsed]:
    """(command, params) for a plain measured run, or None to let click parse."""
    explicit = bool(args) and args[0] == "run"
    i = 1 if explicit else 0
    params: Dict[str, Any] = {}
    while i < len(args):
        a = args[i]
        if a == "--":
            return _command(args[i + 1:], params, forced=True)
        if not a.startswith("-") or a == "-":
            return _command(args[i:], params, forced=explicit)
        flag, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        o = BY_FLAG.get(flag)
        if o is None:
            return None
        if o.metavar is None:
            if eq:
                return None
            params[o.dest] = True
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    return None
                value = args[i]
            if o.choices and value not in o.choices:
                return None
            if o.multiple:
                params.setdefault(o.dest, []).append(value)
            else:
                params[o.dest] = value
        i += 1
    return None


def _command(command: List[str], params: Dict[str, Any], forced: bool) -> Optional[Parsed]:
    if not command:
        return None
    if not forced and (command[0] in COMMANDS or not findable(command[0])):
        return None  # a subcommand, or a typo click may want to suggest a subcommand for
    return command, params


def findable(name: str) -> bool:
    """Would posix_spawnp find `name`? (Names with a slash are paths: the spawn reports them.)"""
    if "/" in name:
        return True
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if os.access(os.path.join(d or ".", name), os.X_OK):
            return True
    return False


def run(parsed: Parsed, debug: bool) -> None:
    """Measure the command; exit with its code without interpreter teardown."""
    from carbonrun.cli.measure import measure_options  # the engine: only once the line is understood

    command, params = parsed
    try:
        code = measure_options(command, params)
    except (Exception, KeyboardInterrupt) as e:
        exits.handle(e, debug)
    exits.leave(code)
