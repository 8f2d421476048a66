"""Terminal manners: colour only on a terminal without NO_COLOR, widths that fit."""
from __future__ import annotations

import os
from typing import IO


def color_enabled(stream: IO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty() or bool(os.environ.get("FORCE_COLOR"))


def terminal_width(stream: IO, default: int = 100) -> int:
    if stream.isatty():
        # the terminal's own width (an exported COLUMNS may be stale); below 20 nothing fits anyway, and
        # rendering wider than the terminal makes it wrap lines inside figures
        try:
            return max(20, os.get_terminal_size(stream.fileno()).columns)
        except (OSError, ValueError):
            return max(20, _columns_env(default))
    return default


def _columns_env(default: int) -> int:
    """COLUMNS when the terminal cannot say (as shutil.get_terminal_size, without importing shutil)."""
    try:
        return int(os.environ.get("COLUMNS", "")) or default
    except ValueError:
        return default
