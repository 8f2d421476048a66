"""A live intensity provider that answers from memory, for the resolution order's tests (no HTTP)."""
from __future__ import annotations

from typing import Optional, Tuple

from carbonrun.intensity.providers.base import Provider


class FakeProvider(Provider):
    """current() gives `reading` (g/kWh, valid from, valid to); subclass it to fail in a given way."""

    name = "fake"
    title = "Fake"
    granularity_s = 1800
    caveat = None
    reading: Tuple[float, float, float] = (123.0, 0.0, 1800.0)

    def current(self, region: Optional[str] = None) -> Tuple[float, float, float]:
        return self.reading
