"""Plain-text layout for terminals and logs: labelled lines, tables that fit, optional ANSI style.

Width 0 means "not a terminal": nothing is wrapped, so CI and SLURM logs get one line per fact with
no trailing spaces. On a terminal, lines wrap at word boundaries, and a table that does not fit
drops its least important columns, then stacks each row, rather than cutting a number.
"""
from __future__ import annotations

import re
import textwrap
from itertools import starmap
from typing import List, Optional, Sequence

from carbonrun.sanitize import terminal

STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
LABEL = 12  # the width of the label column in a summary
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def printable(text: str) -> str:
    """Text from a record with control characters shown, never sent to the terminal."""
    return terminal(text)


def style(text: str, name: Optional[str], color: bool) -> str:
    if not color or not name or not text:
        return text
    return f"\x1b[{STYLES[name]}m{text}\x1b[0m"


def visible(text: str) -> int:
    return len(_ANSI.sub("", text))


def wrap(text: str, width: int, indent: int = 0) -> List[str]:
    """`text` broken at spaces to `width` columns (none when width is 0), continuation lines indented."""
    if width <= 0 or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width=max(width, indent + 16), subsequent_indent=" " * indent,
                         break_long_words=True, break_on_hyphens=False) or [text]


def labelled(label: str, text: str, width: int, color: bool, label_style: str = "bold") -> List[str]:
    """`label      text`, wrapped under the text; on a narrow terminal the text goes below the label."""
    indent = LABEL if width <= 0 or width >= 3 * LABEL else 2
    if indent == LABEL:
        lines = wrap(f"{label:<{LABEL - 1}} {text}", width, LABEL)
    else:
        lines = [label] + wrap(" " * indent + text, width, indent)
    head = lines[0]
    lines[0] = style(head[:len(label)], label_style, color) + head[len(label):]
    return lines


def table(heads: Sequence[str], rows: Sequence[Sequence[str]], width: int, *, right: Sequence[int] = (),
          drop: Sequence[int] = (), flex: Optional[int] = None, gap: int = 2, color: bool = False) -> List[str]:
    """Rows under a header, aligned; columns in `drop` (least important first) go when they do not fit.

    The `flex` column (free text, such as a command line) is cut to the room left, down to 12
    characters; when even that does not fit, each row is stacked: its first cell, then `head value`
    pairs packed into lines. Figures are never cut."""
    keep = list(range(len(heads)))
    columns = list(zip(*rows)) if rows else [()] * len(heads)
    widths = [max(len(h), max(map(len, col), default=0)) for h, col in zip(heads, columns)]

    def total(cols: List[int]) -> int:
        return sum(min(widths[i], 12) if i == flex else widths[i] for i in cols) + gap * (len(cols) - 1)

    for i in drop:
        if width <= 0 or total(keep) <= width:
            break
        keep.remove(i)
    if width > 0 and total(keep) > width:
        return _stacked(heads, rows, width)
    if width > 0 and flex is not None and flex in keep:
        room = width - (total(keep) - min(widths[flex], 12))
        if widths[flex] > room:  # copies only the rows of a table that must be cut
            rows = [[*r[:flex], r[flex] if len(r[flex]) <= room else r[flex][:room - 3] + "...", *r[flex + 1:]]
                    for r in rows]
            widths[flex] = max([len(heads[flex])] + [len(r[flex]) for r in rows])
    # One format string for every row, its fields numbered so that dropped columns are simply not
    # named: a listing lays out 100,000 rows, each with one C-level format call.
    fmt = (" " * gap).join("{%d:%s%d}" % (i, ">" if i in right else "<", widths[i]) for i in keep)
    return [style(fmt.format(*heads).rstrip(), "bold", color)] + [s.rstrip() for s in starmap(fmt.format, rows)]


def _stacked(heads: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> List[str]:
    """Each row as its first cell, then `head value` pairs packed into indented lines."""
    out: List[str] = []
    for r in rows:
        out += wrap(r[0], width, 2)
        line = ""
        for h, cell in zip(heads[1:], r[1:]):
            if not cell:
                continue
            pair = f"{h} {cell}" if h else cell
            if line and len(line) + 2 + len(pair) > width:
                out.append(line)
                line = ""
            line = f"{line}  {pair}" if line else f"  {pair}"
            if len(line) > width:
                out += wrap(line, width, 4)[:-1]
                line = wrap(line, width, 4)[-1]
        if line:
            out.append(line)
    return out
