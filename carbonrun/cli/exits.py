"""How carbonrun ends: one line on stderr and a documented exit code, for the click and the fast path."""
from __future__ import annotations

import os
import sys
from typing import NoReturn

from carbonrun.errors import CarbonrunError

INTERNAL_ERROR = 70  # a bug in carbonrun, never confused with the command's own codes


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (if stderr can take it), then exit with `code`; never a password in it."""
    # the error path only: kept off the start-up path
    from carbonrun.redact import redact_text
    from carbonrun.sanitize import terminal_lines

    try:
        sys.stderr.write(f"carbonrun: error: {terminal_lines(redact_text(message))}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # stderr closed (None), full or a broken pipe: the exit code still tells
    sys.exit(code)


def handle(e: BaseException, debug: bool) -> NoReturn:
    """Map an exception that escaped a command to its line and exit code; re-raise with --debug."""
    if isinstance(e, CarbonrunError):
        if debug:
            raise e
        fail(str(e), e.exit_code)
    if isinstance(e, BrokenPipeError):
        try:
            sys.stderr.close()
        except OSError:
            pass
        sys.exit(141)
    if isinstance(e, KeyboardInterrupt):
        fail("interrupted", 130)
    if debug:
        raise e
    fail(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", INTERNAL_ERROR)


def debugging(args: "list[str]") -> bool:
    """--debug anywhere among carbonrun's own options before the command (or CARBONRUN_DEBUG=1)."""
    if os.environ.get("CARBONRUN_DEBUG") == "1":
        return True
    from carbonrun.cli.options import BY_FLAG  # already loaded on the fast path

    i = 1 if args[:1] == ["run"] else 0
    while i < len(args) and args[i] != "--debug":
        flag, eq, _ = args[i].partition("=")
        o = BY_FLAG.get(flag)
        if o is None:  # the command, `--`, a subcommand or an option that is not ours: no --debug after it
            return False
        i += 1 if o.metavar is None or eq else 2
    return i < len(args)


def leave(code: int) -> NoReturn:
    """Exit at once once everything is written: no interpreter teardown, no close-time work.

    The final record is already committed and synced when this is called, so what teardown would
    add (module finalisers, SQLite's close-time WAL checkpoint, joining daemon threads) is only time.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code & 0xFF if code >= 0 else 1)
