"""Make stored text inert where it is shown: spreadsheet cells and terminals.

Command lines, tags, cwd and host names are written by whoever ran the command, and a shared store
(PostgreSQL) shows them to every user. Two places would otherwise obey them:
- a spreadsheet runs a CSV cell that starts with = + - @ (or TAB/CR) as a formula ("CSV injection");
  OWASP's advice is to prefix such a cell with a single quote, leaving true numbers alone;
- a terminal runs control sequences (ESC ] 0 ; title BEL, ESC [ 2 J, ...); printing them visibly
  escaped (`\\x1b`) shows what is stored without letting it act.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # and full-width forms
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell value that no spreadsheet evaluates; numbers (and non-strings) pass unchanged.

    A carriage return inside a cell becomes a newline: Python's csv writer (lineterminator "\n")
    would leave a cell holding only CR unquoted, and readers that split rows on CR would then start a
    new row, and a new first cell, with whatever follows it.
    """
    if not isinstance(value, str):
        return value
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if not value.startswith(_FORMULA_START) or _NUMBER.fullmatch(value):
        return value  # "-1.5" is a number, not a formula
    return "'" + value


def csv_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """csv_cell on every value of a csv.DictWriter row."""
    return {k: csv_cell(v) for k, v in row.items()}


_TABLE: Optional[Dict[int, str]] = None


def _table() -> Dict[int, str]:
    global _TABLE
    if _TABLE is None:
        codes = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
        table = {c: f"\\x{c:02x}" for c in codes}
        table.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
        # bidirectional overrides and isolates reorder what follows them ("Trojan Source")
        for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
            table[c] = f"\\u{c:04x}"
        _TABLE = table
    return _TABLE


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal(text: Any) -> str:
    """`text` with every control character shown as a visible escape (ESC -> `\\x1b`, newline -> `\\n`)."""
    s = str(text)
    if not _UNSAFE.search(s):
        return s
    return s.translate(_table())


_SGR = re.compile(r"(\x1b\[[0-9;]*m)")
_KEPT_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")  # less \t, \n


def terminal_output(text: str) -> str:
    """A whole rendered output bound for a terminal: newlines, tabs and colour (SGR) sequences stay,
    every other control character is shown escaped. The last line of defence for formats that are
    files first (CSV, Markdown, HTML, LaTeX) when they are printed to a terminal instead."""
    if not _UNSAFE.search(text):
        return text
    if "\x1b" in text and not _KEPT_UNSAFE.search(_SGR.sub("", text)):
        return text  # colour, newlines and tabs only (a coloured 100,000-line listing): no split needed
    table = dict(_table())
    del table[0x0A], table[0x09]
    return "".join(part if i % 2 else part.translate(table) for i, part in enumerate(_SGR.split(text)))


def terminal_lines(text: str) -> str:
    """Like terminal(), but keeps the newlines that separate a rendered block's lines."""
    return "\n".join(terminal(line) for line in text.split("\n"))
