"""The run record as JSON (schema carbonrun.run/1)."""
from __future__ import annotations

import json
from typing import Any, List, cast

from carbonrun.record import public


def render(record: dict, *, color: bool = False, width: int = 100) -> str:
    return json.dumps(public(cast(Any, record)), indent=2) + "\n"


def render_many(records: List[dict]) -> str:
    return json.dumps([public(cast(Any, r)) for r in records], indent=2) + "\n"
