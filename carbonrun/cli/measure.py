"""Terminal side of a measured run: live table while it runs, summary after, exit code."""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Sequence

from carbonrun import files
from carbonrun import settings as settings_mod
from carbonrun.cli.options import given
from carbonrun.errors import CarbonrunError
from carbonrun.measure.engine import STORE_FAILED, execute, prepare
from carbonrun.cli.exits import debugging
from carbonrun.measure.session import LaunchError, block_signals, caller, run_unmeasured, wait_for
from carbonrun.record import public
from carbonrun.settings import Settings
from carbonrun.cli.render import color_enabled, terminal_width


# Notes that say something the user asked for did not happen: each is also a warning line, even under --quiet.
WARNED_NOTES = (STORE_FAILED, "could not write the Prometheus textfile", "could not push metrics")


def measure_options(command: Sequence[str], params: Dict[str, Any]) -> int:
    """`carbonrun run` from parsed options (click's or the fast path's): settings, then measure."""
    caller()  # the state to start the command in, before carbonrun changes any (signals block at the spawn)
    params = dict(params)
    no_live, start_now = params.pop("no_live", False), params.pop("start_now", False)
    verbose = bool(params.pop("verbose", False))
    params.update(quiet=params.get("quiet") or None, live=False if no_live else None,
                  json=params.pop("json_path", None))
    flags = given(params)
    if no_live:
        flags["live"] = (False, "flag")
    st = settings_mod.resolve(flags)
    if start_now:  # --now wins over a start-within from the environment or a config file
        st.values["start_within"], st.sources["start_within"] = None, "flag --now"
    return measure(list(command), st, verbose=verbose)


def measure(argv: List[str], st: Settings, verbose: bool = False) -> int:
    plan = None
    if st.values.get("start_within"):  # carbon-aware start: decide, show, wait (cli/plan.py)
        from carbonrun.cli.plan import plan_and_wait  # planner and forecasts: only with --start-within

        block_signals()  # the wait takes Ctrl-C and friends with sigtimedwait: they cancel it
        plan = plan_and_wait(argv, st)
    try:
        p = prepare(argv, st)
    except CarbonrunError:
        raise  # bad input: exit 2 before anything starts
    except Exception as e:  # carbonrun's own trouble: it does not decide whether the command runs
        return _unmeasured(argv, e, "cannot set up the measurement")
    if p.store.refused:  # the run goes on; its record is kept in a file of its own (the summary says where)
        say(f"carbonrun: warning: {p.store.refused}")
    if plan is not None:
        p.record["plan"] = plan
    live = None
    if not st.quiet and st.live and _isatty(sys.stderr):
        from carbonrun.cli.live import LiveTable  # only on a terminal

        live = LiveTable(sys.stderr)
    started: List[Any] = []

    def on_start(loop: Any) -> None:
        started.append(loop)
        if live:
            try:
                live.start(loop)
            except Exception:  # a terminal that cannot take the table: the summary at the end will do
                loop.on_draw = None

    try:
        record, outcome = execute(p, argv, on_draw=live.draw if live else None, on_start=on_start)
    except LaunchError as e:
        raise CarbonrunError(str(e), e.exit_code) from None
    except Exception as e:  # once the command has run, its exit code is carbonrun's whatever failed here
        pid = getattr(started[0], "pid", 0) if started else 0
        if not pid:
            return _unmeasured(argv, e, "cannot start the measurement")
        code = started[0].outcome.exit_code
        if code is None:  # still running: wait for it as if nothing had happened
            code = wait_for(pid)
        say(f"carbonrun: error: {_what(e)}; the run's record may be incomplete, the exit code is the command's")
        return int(code)
    finally:
        if live:
            try:
                live.stop()
            except Exception:
                pass
    code = outcome.exit_code if outcome.exit_code is not None else 1
    try:
        if st.json:
            _write_json(st.json, dict(public(record)))
        summary(dict(record), quiet=st.quiet, verbose=verbose)
        for note in record.get("notes") or []:  # what failed on carbonrun's side, in full, whatever the summary
            if note.startswith(WARNED_NOTES):
                say(f"carbonrun: warning: {note}")
    except Exception as e:  # a closed, full or broken stderr: the command's exit code still tells
        say(f"carbonrun: warning: the summary could not be shown ({_what(e)})")
    return code


def _unmeasured(argv: List[str], error: Exception, what: str) -> int:
    """Run the command with no measuring, after one line that says why (a bug: --debug shows it)."""
    if debugging(sys.argv[1:]):
        raise error
    say(f"carbonrun: error: {what} ({_what(error)}); running the command unmeasured")
    try:
        return run_unmeasured(argv)
    except LaunchError as e:
        raise CarbonrunError(str(e), e.exit_code) from None


def say(line: str) -> None:
    """One line on stderr if stderr can take it: closed, full or a broken pipe is not worth failing for."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _what(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _write_json(path: str, record: dict) -> None:
    """The record to FILE, or to stdout for `-` (after the command's own output: it has ended)."""
    text = json.dumps(record, indent=2) + "\n"
    try:
        if path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            files.write_atomic(path, text)
    except (OSError, ValueError, AttributeError) as e:
        where = "stdout" if path == "-" else path
        say(f"carbonrun: warning: cannot write {where}: {getattr(e, 'strerror', None) or e}")


def summary(record: dict, quiet: bool, verbose: bool = False) -> None:
    """The summary on stderr: wrapped to a terminal's width, one unwrapped line per fact in a log."""
    if quiet:
        from carbonrun.report.oneline import render as oneline  # one report module of many, when used
        sys.stderr.write(oneline(record) + "\n")
        return
    from carbonrun.report.table import render  # plain text: the summary needs no rich

    width = terminal_width(sys.stderr) if sys.stderr.isatty() else 0
    sys.stderr.write(render(record, color=color_enabled(sys.stderr), width=width, verbose=verbose))
