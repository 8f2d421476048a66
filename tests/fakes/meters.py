"""A meter whose cumulative joules the test sets: for driving the accountant and the loop directly."""
from __future__ import annotations

from typing import Optional

from carbonrun.collectors.base import JobView, Meter


class SetMeter(Meter):
    """read() returns `joules` as last set; job_share() returns `share` (None: the job's CPU share)."""

    def __init__(self, component: str = "cpu", device: str = "", *, counted: bool = True,
                 low_factor: float = 1.0, high_factor: float = 1.0, share: Optional[float] = None) -> None:
        super().__init__()
        self.component, self.device = component, device or component
        self.counted = counted
        self.estimated = (low_factor, high_factor) != (1.0, 1.0)
        self.low_factor, self.high_factor = low_factor, high_factor
        self.share = share
        self.joules = 0.0

    def read(self, now: float) -> float:
        return self.joules

    def job_share(self, job: JobView) -> Optional[float]:
        return self.share
