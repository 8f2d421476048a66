"""The one interface every energy source implements: a cumulative-energy meter for one device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional


# How often the job's process tree is sampled and each step's energy attributed (5 Hz): cheap however
# fast the meters are read. Meters whose job_share() queries the device (NVML) pace themselves by it.
ATTRIBUTION_STEP_S = 0.2


class Probe(NamedTuple):
    """Where the hardware lives and what the user asked for; passed in so tests can point it at fakes."""

    rapl_root: str = "/sys/class/powercap"
    proc_root: str = "/proc"
    sys_root: str = "/sys"
    gpus: str = "all"  # all | none | comma-separated indices (after CUDA_VISIBLE_DEVICES)
    interval: float = 0.1


class JobView(NamedTuple):
    """What the session knows about the job at an attribution step."""

    cpu_share: float  # job CPU time / machine busy CPU time over the step, in [0, 1]
    pids: FrozenSet[int]  # every live PID of the job's process tree
    cpu_s: float = 0.0  # the job's CPU seconds in the step
    rss_bytes: int = 0  # the job's resident memory now


class Meter:
    """A cumulative-energy meter for one device.

    Subclasses set the class attributes and implement read(). read() must be cheap: the session
    calls it every tick (down to 1 ms). It returns joules since the meter was opened, corrected
    for counter wraparound, never decreasing. A meter that loses its device keeps returning the
    last good value and appends a note.
    """

    component: str = "cpu"  # cpu | dram | gpu | ram | psys
    device: str = ""  # e.g. "package-0", "gpu0", "cpu"
    source: str = "estimate"  # rapl | nvml-energy | nvml-power | estimate
    estimated: bool = False
    low_factor: float = 1.0  # low/high bounds as factors of the reading (1.0 when measured)
    high_factor: float = 1.0
    counted: bool = True  # False for psys: shown on its own, never added to totals

    def __init__(self) -> None:
        self.notes: List[str] = []

    def read(self, now: float) -> float:
        """Joules since open. `now` is the session's monotonic time of this tick."""
        raise NotImplementedError

    def job_share(self, job: JobView) -> Optional[float]:
        """The job's fraction of this device's energy over the last step; None means the CPU share."""
        return None

    def position(self) -> Optional[Dict[str, float]]:
        """Where the device's own cumulative counter stood at the last read, for another process on
        the same machine to continue from (a rank taking over a node); None when it has none."""
        return None

    def reading_at(self, position: Dict[str, float]) -> Optional[float]:
        """What read() would have returned at another meter's position() of the same device (at or
        before this meter's last read), or None when it cannot tell."""
        return None

    def close(self) -> None:
        """Release the device (NVML shutdown and the like)."""


@dataclass(eq=False)
class Discovery:
    """What a collector found: its meters, notes for the record, and facts for `host`."""

    meters: List[Meter] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    gpus: List[Dict[str, Any]] = field(default_factory=list)  # host.gpus entries: {index, name, uuid, driver}
    details: List[Dict[str, Any]] = field(default_factory=list)  # for `doctor`: one dict per sensor seen
    max_interval: Optional[float] = None  # the longest sampling interval that sees every counter wrap
