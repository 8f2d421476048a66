"""Report formats: one module each with `render(record, *, color=False, width=100) -> str`.

Formats that can list several runs also have `render_many(records) -> str`.
"""
from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from types import ModuleType

FORMATS = {
    "table": "carbonrun.report.table",
    "json": "carbonrun.report.jsonfmt",
    "csv": "carbonrun.report.csvfmt",
    "markdown": "carbonrun.report.markdown",
    "html": "carbonrun.report.html",
    "statement": "carbonrun.report.statement",
    "latex": "carbonrun.report.latex",
    "codecarbon": "carbonrun.report.codecarbon",
}


def formatter(name: str) -> ModuleType:
    return import_module(FORMATS[name])


def available() -> list:
    """Format names whose module exists in this build."""
    return [n for n, m in FORMATS.items() if find_spec(m) is not None]
