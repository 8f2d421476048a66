"""click's number types, checked like every other number (carbonrun/validate.py): finite or refused.

click.FloatRange lets `nan` through (every comparison with NaN is false) and `inf` past an open
maximum; these types refuse both with click's usual usage error (exit 2).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import click


class FiniteRange(click.FloatRange):
    """click.FloatRange that refuses NaN and the infinities."""

    name = "number"  # click says "'1d' is not a valid number"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        x = super().convert(value, param, ctx)
        if isinstance(x, float) and not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return x
