"""A clock that moves only when slept on: waits of hours run in microseconds, and every sleep is recorded."""
from __future__ import annotations

from typing import List, Optional


class FakeClock:
    """Call it for the time; `sleep(s)` advances it by s and returns None (no signal arrived)."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> Optional[int]:
        self.sleeps.append(seconds)
        self.t += seconds
        return None
