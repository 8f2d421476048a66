"""The command line: `main` is the console script.

This package's __init__ imports nothing heavy (no click): a plain measured run takes the fast path
(cli/fast.py); everything else goes to the click application (cli/app.py).
"""
from __future__ import annotations

import sys
from typing import List, Optional

from carbonrun import settings
from carbonrun.cli import fast
from carbonrun.cli.exits import debugging
from carbonrun.sanitize import terminal


def _warn(line: str) -> None:
    try:
        sys.stderr.write(f"carbonrun: warning: {terminal(line)}\n")
    except (OSError, ValueError, AttributeError):
        pass  # stderr closed or full: a warning is not worth failing for


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings.warn = _warn
    parsed = fast.parse(args)
    if parsed is not None:
        fast.run(parsed, debugging(args))
    from carbonrun.cli.app import main as click_main  # click: only when the fast path declines

    click_main(args)
